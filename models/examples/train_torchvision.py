"""What a robot team already has: a torchvision classifier trained on its own image folder
with a plain PyTorch loop (torchvision.datasets.ImageFolder). Used by docs/forge.md's
walkthrough as the "trained model" that models/forge starts from (--weights).

    python train_torchvision.py --data DIR --arch resnet18 --size 64 --epochs 10 --out w.pt
"""
import argparse
import time

import torch
import torch.nn.functional as F
import torchvision
from torchvision import transforms as T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    # the usual torchvision recipe: ImageNet normalisation (tell models/forge: --mean/--std)
    tf = T.Compose([T.Resize((a.size, a.size)), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = torchvision.datasets.ImageFolder(f"{a.data}/train", tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True)
    net = getattr(torchvision.models, a.arch)(num_classes=len(ds.classes))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    t0 = time.time()
    for ep in range(a.epochs):
        net.train()
        for x, y in dl:
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        print(f"epoch {ep + 1}/{a.epochs} ({time.time() - t0:.0f}s)", flush=True)
    torch.save(net.state_dict(), a.out)
    print(f"saved {a.out}: {a.arch}, {len(ds.classes)} classes {ds.classes}")


if __name__ == "__main__":
    main()
