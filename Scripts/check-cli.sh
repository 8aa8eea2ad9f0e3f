#!/usr/bin/env bash
# Smoke test of the ssmrec command on a small generated dataset (debug build): every subcommand
# runs, and every error a user can cause prints one line and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --product ssmrec >/dev/null
bin="$(swift build --show-bin-path)/ssmrec"
work="$(mktemp -d "${TMPDIR:-/tmp}/ssmrec-cli.XXXXXX")"
trap 'rm -rf "$work"' EXIT

{
  printf 'user_id:token\titem_id:token\trating:float\ttimestamp:float\n'
  for u in $(seq 1 40); do for t in $(seq 0 9); do printf 'u%s\ti%s\t1\t%s\n' "$u" $(((u + t) % 25)) "$t"; done; done
} > "$work/tiny.inter"

"$bin" info --data "$work/tiny.inter"
"$bin" train --model mamba4rec --data "$work/tiny.inter" --epochs 2 --batch-size 64 --hidden-size 16 --output "$work/run" --plain
test -s "$work/run/metrics.json"
grep -q '"hr@10"' "$work/run/metrics.json"
"$bin" train --model mamba4rec --data "$work/tiny.inter" --epochs 3 --batch-size 64 --hidden-size 16 --output "$work/run" --plain --resume > "$work/resume.txt"
grep -q "resumed" "$work/resume.txt"
grep -q "epoch 2:" "$work/resume.txt"
"$bin" evaluate --checkpoint "$work/run/best.safetensors" --data "$work/tiny.inter" --json > "$work/eval.json"
grep -q ndcg@10 "$work/eval.json"
"$bin" recommend --checkpoint "$work/run/best.safetensors" --data "$work/tiny.inter" --history i1,i2,i3 -k 5
"$bin" recommend --checkpoint "$work/run/best.safetensors" --data "$work/tiny.inter" --users u1,u2

# The serving example answers requests from standard input, one line each, errors included.
swift build --product Serving >/dev/null
printf 'i1 i2 i3\ni4,i5\nnope i1\n' | "$(swift build --show-bin-path)/Serving" "$work/run/best.safetensors" "$work/tiny.inter" 5 > "$work/served.txt"
cat "$work/served.txt"
[ "$(wc -l < "$work/served.txt")" -eq 3 ] && grep -q "^error: unknown item(s) nope" "$work/served.txt"

expect_failure() {
  local name="$1"; shift
  if "$@" > "$work/out.txt" 2>&1; then echo "check-cli: '$name' should have failed" >&2; exit 1; fi
  echo "ok ($name): $(grep -m1 -i 'error' "$work/out.txt" || head -n 1 "$work/out.txt")"
}
head -c 200 "$work/run/best.safetensors" > "$work/half.safetensors"
expect_failure "missing file" "$bin" info --data "$work/none.inter"
expect_failure "unknown model" "$bin" train --model transformer9 --data "$work/tiny.inter"
expect_failure "bad option value" "$bin" train --model sigma --data "$work/tiny.inter" --epochs 0
expect_failure "corrupt checkpoint" "$bin" evaluate --checkpoint "$work/half.safetensors" --data "$work/tiny.inter"
expect_failure "unknown item" "$bin" recommend --checkpoint "$work/run/best.safetensors" --data "$work/tiny.inter" --history nope
expect_failure "empty history" "$bin" recommend --checkpoint "$work/run/best.safetensors" --data "$work/tiny.inter" --history ","
printf 'user_id:token\titem_id:token\n1\n' > "$work/bad.inter"
expect_failure "malformed file" "$bin" info --data "$work/bad.inter"
echo "check-cli: all commands behaved"
