"""python -m pipeline [options]      regenerate models (see --help)
python -m pipeline verify DIR...    check model folders against their manifests"""
import sys


def _verify(dirs):
    from .errors import PipelineError
    from .export import verify_folder
    rc = 0
    for d in dirs:
        try:
            r = verify_folder(d)
            print(f"{d}: ok ({len(r['manifest']['descendants'])} descendants, max |diff| "
                  f"{r['max_err']:.2e})")
        except PipelineError as e:
            print(f"error: {e}", file=sys.stderr)
            rc = 1
    return rc


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "verify":
        sys.exit(_verify(sys.argv[2:]))
    from .run import main
    sys.exit(main(sys.argv[1:]))
