#!/usr/bin/env bash
# Throughput benchmark of nestdnn_node over DDS (4 x 640x480 rgb8 x 30 Hz from Cyclone DDS),
# inside a private network namespace. Needs the four models (NESTDNN_MODELS or models/).
#   test/dds/bench.sh [--seconds 20] [--json out.json]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
  echo "==> installing iproute2 and util-linux (ip, unshare)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 util-linux >/dev/null
fi
py=$(scripts/py-env.sh | tail -1)
if [ -z "${NESTDNN_BIN_DIR:-}" ]; then
  cargo build --release -p nestdnn_node --bin nestdnn_node --features dds >&2
  NESTDNN_BIN_DIR="$root/target/release"
fi
models=${NESTDNN_MODELS:-$root/models}
export CYCLONEDDS_URI='<CycloneDDS><Domain><Internal><SocketReceiveBufferSize min="4MB"/></Internal></Domain></CycloneDDS>'
export ROS_DISTRO=${ROS_DISTRO:-jazzy}
exec unshare -n bash -c 'set -e; ip link set lo up; ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo; exec "$@"' _ \
  "$py" "$root/test/dds/bench_throughput.py" --models "$models" --node "$NESTDNN_BIN_DIR/nestdnn_node" "$@"
