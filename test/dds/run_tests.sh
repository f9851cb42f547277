#!/usr/bin/env bash
# DDS integration tests: the nodes against an independent DDS implementation (Cyclone DDS,
# PyPI `cyclonedds`), every participant inside a private network namespace that holds only
# loopback, so no DDS traffic leaves the machine.
#
#   test/dds/run_tests.sh [pytest args]      (needs root for unshare -n; Python env via scripts/py-env.sh)
#   NESTDNN_BIN_DIR=target/debug test/dds/run_tests.sh   (use already-built binaries)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
  echo "==> installing iproute2 and util-linux (ip, unshare)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 util-linux >/dev/null
fi
py=$(scripts/py-env.sh | tail -1)
if [ -z "${NESTDNN_BIN_DIR:-}" ]; then
  # The test profile (opt-level 2, as `cargo test` builds the crate) reuses what
  # `cargo test --workspace` compiled; it writes to target/debug.
  echo "==> building the node binaries (test profile)"
  cargo build --profile test -p nestdnn_node --bin nestdnn_node --bin resource_monitor --bin nestdnn >&2
  export NESTDNN_BIN_DIR="$root/target/debug"
fi
# Cyclone: big enough receive buffers for camera frames (docs/ros2.md, section 8).
export CYCLONEDDS_URI='<CycloneDDS><Domain><Internal><SocketReceiveBufferSize min="4MB"/></Internal></Domain></CycloneDDS>'
export ROS_DISTRO=${ROS_DISTRO:-jazzy}
echo "==> DDS tests in a private network namespace"
exec unshare -n bash -c 'set -e; ip link set lo up; ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo; exec "$@"' _ \
  "$py" -m pytest -q -p no:cacheprovider "$root/test/dds" "$@"
