#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust: installs what the tests need
# (Debian packages, the Python environment), then runs every test:
#   1. Rust: format, clippy (default features, and the r2r adapter type-checked without ROS), docs,
#      unit and integration tests (real models, bags, messages checked against rosidl);
#   2. DDS integration tests against Cyclone DDS, inside a private loopback-only network
#      namespace (needs root for `unshare -n`), and a 1-minute soak run (scripts/soak.sh);
#   3. the offline stage (models/): committed artifacts, a tiny pipeline run end to end, the
#      forge on three families and a real-image folder, golden slicing of vgg16, resnet50 and
#      mobilenet_v2 at 224 px (Rust runtime vs PyTorch);
#   4. smoke runs of the main job (bag replay) and of the multi-tenant benchmark;
#   5. a short fuzzing pass over the parsers of outside data (scripts/fuzz.sh).
# Set NESTDNN_SKIP_R2R=1 to skip the r2r type-check (slow on a cold cache).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
start=$(date +%s)
step() { echo "==> [$(($(date +%s) - start)) s] $*"; }

need_apt=()
[ -d /usr/share/datasets/fashion-mnist ] || need_apt+=(dataset-fashion-mnist)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v unshare >/dev/null || need_apt+=(util-linux)
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing Debian packages: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

step "Python environment"
scripts/py-env.sh >/dev/null

step "Rust: fmt"
cargo fmt --all -- --check
step "Rust: clippy"
cargo clippy --workspace --all-targets -- -D warnings
step "Rust: docs (broken intra-doc links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc -q --no-deps --workspace
if [ "${NESTDNN_SKIP_R2R:-0}" != 1 ]; then
  step "Rust: clippy of the r2r transport (type-checked without ROS: r2r/doc-only)"
  cargo clippy -p nestdnn_node --lib --bins --features r2r,r2r/doc-only -- -D warnings
fi
step "Rust: tests"
cargo test --workspace

step "DDS integration tests (private network namespace)"
test/dds/run_tests.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

step "soak: 1 minute (node and monitor restarts, budget / priority changes; private network namespace)"
NESTDNN_BIN_DIR=target/debug scripts/soak.sh --minutes 1 --report "$tmp/soak.json"

cargo build -q --profile test -p nestdnn_node --bin nestdnn
if [ -x models/test.sh ]; then
  step "models pipeline and forge tests (forge x3 families on a real-image folder, golden slicing at 224 px)"
  NESTDNN_BIN=target/debug/nestdnn models/test.sh
fi

step "smoke: scripts/demo.sh --smoke"
scripts/demo.sh --smoke

step "smoke: nestdnn bench multitenant --quick"
target/debug/nestdnn bench multitenant --quick --report "$tmp/multitenant-quick.json"
target/debug/nestdnn bench table --report "$tmp/multitenant-quick.json" >/dev/null
step "fuzzing: scripts/fuzz.sh --seconds 15 (AFL++, 7 targets)"
scripts/fuzz.sh --seconds 15
step "all tests passed"
