#!/usr/bin/env bash
# Main job: replay the bundled multi-camera recording (test/bags/recording_heavy: 6 cameras at
# 30 Hz for 20 s, four light tasks and the two heavy apps objects_vgg and items_far_vgg, with
# resource-budget and task-priority events where they contend) through the node core, with
# no ROS, no network and no Python: builds the `nestdnn` tool (release), then runs
#   nestdnn replay test/bags/recording_heavy --params params/replay_heavy.yaml \
#     --profiles test/bags/profiles
# printing a live table once per bag second (per task: descendant, share, fps, accuracy so
# far, drops) and a final summary, and writes to OUT_DIR (default out/demo/):
#   report.json   per task frames/processed/dropped/accuracy/switches, every plan + trigger
#   plot.svg      CPU budget and each task's planned descendant over bag time (and the
#   plot.png      same plot as PNG)
#   results.mcap  the node's outputs (results, classifications, plans) as a ROS 2 bag
#
# Options:
#   --out DIR     output folder
#   --watch X     sleep X wall seconds per bag second (e.g. 0.5) to follow the table live
#   --realtime    run on the wall clock through the real node core (20 s; real drops and
#                 frame rates; plans use this machine's profile cache)
#   --smoke       quick check for CI: the 4 s .db3 recording (2 light tasks,
#                 params/replay.yaml), no live table, built with the
#                 test profile (reuses what `cargo test` compiled)
# Deterministic by default: bag time drives a simulator of the runtime with the committed
# profiles' latencies (the same plans on every machine), and every frame the simulator
# serves is really classified by the descendant it says (real accuracy).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

out=out/demo
watch=0
mode=()
bag=test/bags/recording_heavy
params=params/replay_heavy.yaml
extra=()
smoke=0
profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --watch) watch=$2; shift 2 ;;
    --realtime) mode=(--realtime); shift ;;
    --smoke) smoke=1; shift ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$smoke" = 1 ]; then
  bag=test/bags/recording_db3
  params=params/replay.yaml
  extra=(-p digits_vgg.transport:=compressed --every 0)
  out=${out%/}-smoke
  profile=test
fi

start=$(date +%s.%N)
echo "==> building nestdnn ($profile profile)" >&2
cargo build --profile "$profile" --quiet -p nestdnn_node --bin nestdnn
target=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
dir=release
[ "$profile" = test ] && dir=debug   # the test profile writes to target/debug
exe=${target:-$root/target}/$dir/nestdnn
built=$(date +%s.%N)

profiles=(--profiles test/bags/profiles)
[ ${#mode[@]} -gt 0 ] && profiles=()
mkdir -p "$out"
echo "==> replaying $bag (results in $out/)" >&2
set +e
"$exe" replay "$bag" --params "$params" "${profiles[@]}" "${mode[@]}" \
  --watch "$watch" "${extra[@]}" \
  --report "$out/report.json" --plot "$out/plot.svg" --out "$out/results.mcap"
rc=$?
set -e
end=$(date +%s.%N)
awk -v a="$start" -v b="$built" -v c="$end" \
  'BEGIN { printf "\nbuild %.1f s, replay %.1f s, total %.1f s\n", b - a, c - b, c - a }'
echo "outputs: $out/report.json  $out/plot.svg  $out/plot.png  $out/results.mcap"
exit $rc
