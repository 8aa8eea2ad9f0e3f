#!/usr/bin/env bash
# SSMRec against the PyTorch peer (../shared/peers, set up with its setup.sh) in one run on one
# machine: for each case the peer's step_bench.py and `ssmrec bench` run back to back (B 256,
# 2 threads each, 10 timed repeats after warm-up), so both see the same machine state. Prints a
# Markdown table of medians, ratios and peak memory; the raw JSON lines go to $OUT (default
# side-by-side.jsonl).
#
#   bash Scripts/side-by-side.sh                    # the cases of Docs/Performance.md
#   CASES="sigma:50 sigma:200" bash Scripts/side-by-side.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
peers="${PEERS_DIR:-$root/../shared}"
python="${PEERS_VENV:-$HOME/.cache/ssmrec-peers/venv}/bin/python"
out="${OUT:-side-by-side.jsonl}"
items="${ITEMS:-3417}"
cases="${CASES:-mamba4rec:50 sigma:50 sasrec:50 gru4rec:50 mamba4rec:200 sigma:200 sasrec:200 gru4rec:200}"
[ -x "$python" ] || { echo "side-by-side: no peer venv at $python (run ../shared/peers/setup.sh)" >&2; exit 1; }
swift build -c release --product ssmrec >/dev/null
bin="$root/.build/release/ssmrec"
: > "$out"
for c in $cases; do
  model="${c%%:*}" length="${c##*:}"
  peer_model="$model"
  extra=()
  case "$model" in
    mamba4rec | sigma) peer_model="$model-seq" ;;  # the peer's faster (sequential-loop) scan
    gru4rec) extra=(--hidden-size 64) ;;           # the peer's GRU4Rec is 64 wide
  esac
  peer=$(cd "$peers" && "$python" peers/step_bench.py --single "$peer_model" "$length" "$items" 2>/dev/null | sed -n 's/^RESULT //p')
  ours=$("$bin" bench --model "$model" --length "$length" --items "$items" --repeats 10 --json "${extra[@]}")
  printf '{"case": "%s", "peer": %s, "ssmrec": %s}\n' "$c" "${peer:-null}" "$ours" >> "$out"
done
python3 - "$out" <<'EOF'
import json, sys
print("| model | L | V | train ms PyTorch | train ms SSMRec | × | infer ms PyTorch | infer ms SSMRec | × | peak MiB train PyTorch / SSMRec |")
print("|---|---|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    r = json.loads(line)
    o, p = r["ssmrec"], r["peer"]
    if p is None:
        print(f"| {o['model']} | {o['length']} | {o['items']} | (peer failed) | {o['train_step_ms']:.0f} | | | {o['infer_batch_ms']:.1f} | | |")
        continue
    pt, pi = p["train_step"]["median_ms"], p["infer_batch"]["median_ms"]
    print(f"| {o['model']} | {o['length']} | {o['items']} | {pt:.0f} | {o['train_step_ms']:.0f} | {pt / o['train_step_ms']:.1f} "
          f"| {pi:.1f} | {o['infer_batch_ms']:.1f} | {pi / o['infer_batch_ms']:.1f} | {p['peak_rss_mb_train'] / 1.048576:.0f} / {o['peak_resident_mib']:.0f} |")
EOF
