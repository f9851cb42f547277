#!/usr/bin/env bash
# Soak run: nestdnn_node + resource_monitor + an independent Cyclone DDS peer (Python) for N
# minutes, inside a private network namespace holding only loopback (needs root for unshare -n).
# Cameras of four tasks at 30 Hz; budget changes (monitor trace, or the peer while the monitor
# is down) and priority / enable changes every few seconds; one camera stops and resumes; the
# monitor is stopped and restarted every minute; the node is stopped (SIGTERM, SIGINT) and
# restarted twice. Scenario and accounting: test/dds/soak.py.
#
#   scripts/soak.sh --minutes N --report FILE [--keep-logs]
#   NESTDNN_BIN_DIR=target/debug scripts/soak.sh ...   (use already-built binaries)
#
# Writes the JSON report atomically (never over an input); exits non-zero, saying why, when
# results_lost > 0, panics > 0 or rss_drift_pct > 5 (or a process did not stop cleanly).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
minutes="" report="" keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=${2:?--minutes needs a value}; shift 2 ;;
    --report) report=${2:?--report needs a file}; shift 2 ;;
    --keep-logs) keep=1; shift ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$minutes" ] || [ -z "$report" ]; then
  echo "usage: scripts/soak.sh --minutes N --report FILE [--keep-logs]" >&2
  exit 2
fi
case "$minutes" in ''|*[!0-9.]*) echo "soak.sh: --minutes must be a number" >&2; exit 2 ;; esac
report_dir=$(cd "$(dirname "$report")" && pwd) || { echo "soak.sh: no folder for $report" >&2; exit 2; }
report="$report_dir/$(basename "$report")"
cd "$root"
if ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
  echo "==> installing iproute2 and util-linux (ip, unshare)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 util-linux >/dev/null
fi
py=$(scripts/py-env.sh | tail -1)
if [ -z "${NESTDNN_BIN_DIR:-}" ]; then
  echo "==> building the node binaries (test profile)" >&2
  cargo build --profile test -p nestdnn_node --bin nestdnn_node --bin resource_monitor >&2
  NESTDNN_BIN_DIR="$root/target/debug"
fi
bin_dir=$(cd "$NESTDNN_BIN_DIR" 2>/dev/null && pwd) || { echo "soak.sh: NESTDNN_BIN_DIR=$NESTDNN_BIN_DIR is not a folder" >&2; exit 2; }
for b in nestdnn_node resource_monitor; do
  [ -x "$bin_dir/$b" ] || { echo "soak.sh: $bin_dir/$b not built" >&2; exit 2; }
done
work=$(mktemp -d "${TMPDIR:-/tmp}/nestdnn-soak.XXXXXX")
export CYCLONEDDS_URI='<CycloneDDS><Domain><Internal><SocketReceiveBufferSize min="4MB"/></Internal></Domain></CycloneDDS>'
export ROS_DISTRO=${ROS_DISTRO:-jazzy}
echo "==> soak: $minutes min in a private network namespace (logs: $work)" >&2
set +e
unshare -n bash -c 'set -e; ip link set lo up; ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo; exec "$@"' _ \
  "$py" "$root/test/dds/soak.py" --minutes "$minutes" --report "$report" --bin-dir "$bin_dir" --workdir "$work"
rc=$?
set -e
if { [ $rc -eq 0 ] && [ $keep -eq 0 ]; } || [ -z "$(ls -A "$work")" ]; then
  rm -rf "$work"
else
  echo "==> soak logs kept in $work" >&2
fi
exit $rc
