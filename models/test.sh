#!/usr/bin/env bash
# Tests of the offline stage (models/): the committed artifacts (nesting, hashes, fixtures via
# onnxruntime, ladder acceptance), the tiny pipeline end to end, and bad input.
# A few minutes on 2 CPU cores; no GPU, no network except what the pipeline installs itself.
#   models/test.sh [pytest args]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if ! py=$("$here/../scripts/py-env.sh" | tail -n1) || [ ! -x "$py" ]; then
  echo "error: could not create the Python environment (scripts/py-env.sh failed)" >&2
  exit 2
fi
cd "$here"
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m pytest -q -p no:cacheprovider tests "$@"
