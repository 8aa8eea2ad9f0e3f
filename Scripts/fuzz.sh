#!/usr/bin/env bash
# Fuzzes SSMRec's readers with libFuzzer and AddressSanitizer: builds the harnesses of Fuzz/
# (a package of their own, so the sanitizer flags never reach the library products) and runs
# each for SECONDS on a scratch copy of its committed seed corpus.
#
#   bash Scripts/fuzz.sh [SECONDS] [HARNESS ...]     # defaults: 60, all of safetensors checkpoint interactions
#
# A crash, a trap, an out-of-bounds access or a time-out fails the script and leaves the input
# that caused it in the printed artifacts folder; turn it into a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(safetensors checkpoint interactions)
bash Scripts/install-deps.sh

# The explicit coverage flags matter: from a clean build the driver's batch mode compiled the
# Swift modules without coverage, leaving only the C kernels instrumented.
build=(swift build --package-path Fuzz --sanitize=fuzzer --sanitize=address
  -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp)
# A package built before a source file of SSMRec was removed can fail on the missing input (an
# incremental-build limitation of path dependencies): then build it once more from scratch.
if ! "${build[@]}" > "${TMPDIR:-/tmp}/ssmrec-fuzz-build.log" 2>&1; then
  echo "fuzz: incremental build failed; building Fuzz/ from scratch" >&2
  rm -rf Fuzz/.build
  "${build[@]}" 2>&1 | grep -vE "ld.gold: warning: Cannot export local symbol" | tail -n 3
fi
bin="$("${build[@]}" --show-bin-path)"
work="$(mktemp -d "${TMPDIR:-/tmp}/ssmrec-fuzz.XXXXXX")"
echo "fuzz: artifacts and logs in $work"

for harness in "${harnesses[@]}"; do
  case "$harness" in
    safetensors) target=FuzzSafeTensors; max_len=8192 ;;
    checkpoint) target=FuzzCheckpoint; max_len=16384 ;;
    interactions) target=FuzzInteractions; max_len=4096 ;;
    *) echo "fuzz: unknown harness $harness (safetensors, checkpoint or interactions)" >&2; exit 2 ;;
  esac
  corpus="$work/$harness-corpus"
  artifacts="$work/$harness-artifacts"
  mkdir -p "$corpus" "$artifacts"
  cp Fuzz/Corpus/"$harness"/* "$corpus"/
  status=0
  "$bin/$target" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$corpus" > "$work/$harness.log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$work/$harness.log" >&2
    echo "fuzz $harness: FAILED; the input is in $artifacts" >&2
    exit 1
  fi
  if ! grep -q 'INITED cov: ' "$work/$harness.log"; then
    tail -n 20 "$work/$harness.log" >&2
    echo "fuzz $harness: the seed corpus reached no instrumented code (is coverage on?)" >&2
    exit 1
  fi
  runs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$work/$harness.log" | grep -o '[0-9]*$' || echo '?')"
  coverage="$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$work/$harness.log" | tail -n 1 || true)"
  corpus_size="$(ls "$corpus" | wc -l)"
  echo "fuzz $harness: ${seconds}s, $runs executions, ${coverage:-no coverage line}, corpus $corpus_size inputs, exit status $status"
done
