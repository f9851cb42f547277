#!/usr/bin/env bash
# tract vs onnxruntime per descendant (single thread, batch 1): builds the release `nestdnn`
# binary, sets up the Python environment, runs scripts/ort_compare.py on the given model
# folders (default: every models/*/). Extra RUSTFLAGS (e.g. "-C target-cpu=native") are
# honoured by the build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build --release -p nestdnn_node --bin nestdnn >&2
py=$(scripts/py-env.sh | tail -n 1)
exec "$py" scripts/ort_compare.py --nestdnn "$root/target/release/nestdnn" "$@"
