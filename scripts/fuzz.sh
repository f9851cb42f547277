#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers of outside data (fuzz/, AFL++ through cargo-afl on
# stable Rust): CDR messages, MCAP and .db3 bags, params files, --ros-args, model manifests,
# image pre-processing.
#   scripts/fuzz.sh [--seconds N] [--execs N] [--target T]...
# Installs cargo-afl and builds AFL++'s runtime when missing, builds the targets
# (fuzz/target/), writes the seed corpora from the repository's files (fuzz/out/seeds/), then
# runs each target for N seconds (default 20) or about N executions, one after the other, and
# fails if any found a crash or a hang (inputs in fuzz/out/<target>/default/{crashes,hangs}).
# Targets: cdr mcap db3 params rosargs manifest preprocess (default: all).
# Limits per execution: 1 s (a hang), 8 GiB of address space (AFL -m: mcap 0.26 reserves a
# string's declared length, up to 4 GiB, before reading it; see docs/reliability.md, "Fuzzing").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
all=(cdr mcap db3 params rosargs manifest preprocess)
seconds=20
execs=""
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --execs) execs=$2; shift 2 ;;
    --target) targets+=("$2"); shift 2 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "fuzz.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ " ${all[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target $t (${all[*]})" >&2; exit 2; }
done
start=$(date +%s)
step() { echo "--> [fuzz $(($(date +%s) - start)) s] $*"; }

afl_version=0.18.2
if ! cargo afl --version 2>/dev/null | grep -q "$afl_version"; then
  step "installing cargo-afl $afl_version"
  cargo install --locked --version "$afl_version" cargo-afl
fi
# Builds AFL++ (bundled with cargo-afl) once per rustc version; says so when already built.
if ! out=$(cargo afl config --build 2>&1); then
  grep -q "already built" <<<"$out" || { echo "$out" >&2; exit 1; }
fi

step "building the fuzz targets (fuzz/target, AFL instrumentation)"
export CARGO_TARGET_DIR="$root/fuzz/target"
cargo afl build --release --bins --manifest-path fuzz/Cargo.toml
bin="$CARGO_TARGET_DIR/release"
out="$root/fuzz/out"
mkdir -p "$out"
"$bin/make_seeds" "$root" "$out/seeds" >/dev/null

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_NO_AFFINITY=1 AFL_QUIET=1 AFL_SKIP_CRASHES=0
stat() { sed -n "s/^$2 *: *//p" "$1/default/fuzzer_stats"; }
failed=()
printf '%-11s %10s %8s %14s %7s %6s\n' target execs exec/s edges crashes hangs
for t in "${targets[@]}"; do
  dir="$out/$t"
  rm -rf "$dir"
  limit=(-V "$seconds")
  [ -n "$execs" ] && limit=(-E "$execs")
  if ! cargo afl fuzz "${limit[@]}" -t 1000 -m 8192 -i "$out/seeds/$t" -o "$dir" \
      -- "$bin/$t" >"$out/$t.log" 2>&1; then
    echo "fuzz.sh: afl-fuzz failed on $t; log: fuzz/out/$t.log" >&2
    tail -20 "$out/$t.log" >&2
    exit 1
  fi
  crashes=$(find "$dir/default/crashes" -type f -name 'id:*' | wc -l)
  # AFL's hang limit is 1 s of the instrumented build on a possibly busy machine: a saved
  # hang counts only if it still runs over 10 s on its own.
  hangs=0
  for h in "$dir"/default/hangs/id:*; do
    [ -e "$h" ] || continue
    rc=0
    (ulimit -v 8388608; timeout 10 "$bin/$t" <"$h" >/dev/null 2>&1) || rc=$?
    if [ "$rc" = 124 ]; then hangs=$((hangs + 1)); fi
  done
  printf '%-11s %10s %8s %14s %7s %6s\n' "$t" "$(stat "$dir" execs_done)" \
    "$(stat "$dir" execs_per_sec)" "$(stat "$dir" edges_found)/$(stat "$dir" total_edges)" \
    "$crashes" "$hangs"
  [ "$crashes" = 0 ] && [ "$hangs" = 0 ] || failed+=("$t")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashes or hangs in: ${failed[*]} (inputs in fuzz/out/<target>/default/{crashes,hangs};" \
    "reproduce: fuzz/target/release/<target> < INPUT)" >&2
  exit 1
fi
step "no crash, no hang"
