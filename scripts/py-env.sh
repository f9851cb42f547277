#!/usr/bin/env bash
# Creates (or updates) the project's Python environment at $NESTDNN_VENV (default: .venv in the
# repository root) from requirements.txt and prints its python path on the last line.
# Idempotent: a second run with an unchanged requirements.txt installs nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${NESTDNN_VENV:-$root/.venv}
req=$root/requirements.txt
stamp=$venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
