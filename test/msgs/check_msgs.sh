#!/usr/bin/env bash
# Runs check_msgs.py with Debian's rosidl parsers, installing python3-rosidl when missing
# (root + apt, as on CI). Usage: test/msgs/check_msgs.sh [RUST_DEFS.json]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
if ! "$py" -c 'import rosidl_adapter.parser, rosidl_parser.parser, em, lark' 2>/dev/null; then
  echo "installing python3-rosidl python3-empy python3-lark (Debian) for the rosidl parsers" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq python3-rosidl python3-empy python3-lark >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq python3-rosidl python3-empy python3-lark >/dev/null; }
fi
exec "$py" "$here/check_msgs.py" "$here/../../msgs/msg" "$@"
