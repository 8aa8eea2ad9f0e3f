#!/usr/bin/env bash
# SSMRec against the PyTorch peer (../shared/peers, set up with its setup.sh) in one run on one
# machine: for each case the peer's step_bench.py eager, the same with PEERS_COMPILE=1 (the
# encoder through torch.compile; 3 warm-ups keep compilation out of the timing) and `ssmrec
# bench` run back to back (B 256, 2 threads each, 10 timed repeats after warm-up), so all see
# the same machine state. Prints a Markdown table of medians, both ratios and peak memory; the
# raw JSON lines go to $OUT (default side-by-side.jsonl). COMPILED=0 skips the compiled peer.
#
#   bash Scripts/side-by-side.sh                    # the cases of Docs/Performance.md
#   CASES="sigma:50 sigma:200" bash Scripts/side-by-side.sh
#   BATCH=1 bash Scripts/side-by-side.sh            # one history at a time, as a server answers
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
peers="${PEERS_DIR:-$root/../shared}"
python="${PEERS_VENV:-$HOME/.cache/ssmrec-peers/venv}/bin/python"
out="${OUT:-side-by-side.jsonl}"
items="${ITEMS:-3417}"
batch="${BATCH:-256}"
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
  # A peer that fails (torch.compile cannot compile every model at every size) is reported as "—".
  peer=$(cd "$peers" && "$python" peers/step_bench.py --single "$peer_model" "$length" "$items" --batch "$batch" 2>/dev/null | sed -n 's/^RESULT //p' || true)
  compiled=""
  if [ "${COMPILED:-1}" = 1 ]; then
    compiled=$(cd "$peers" && PEERS_COMPILE=1 "$python" peers/step_bench.py --single "$peer_model" "$length" "$items" --batch "$batch" --warmup 3 \
      2>/dev/null | sed -n 's/^RESULT //p' || true)
  fi
  ours=$("$bin" bench --model "$model" --length "$length" --items "$items" --batch "$batch" --repeats 10 --json "${extra[@]}")
  printf '{"case": "%s", "peer": %s, "compiled": %s, "ssmrec": %s}\n' "$c" "${peer:-null}" "${compiled:-null}" "$ours" >> "$out"
done
python3 - "$out" <<'EOF'
import json, sys
print("| model | B | L | V | train ms: eager / compiled / SSMRec | × eager / × compiled | infer ms: eager / compiled / SSMRec | × eager / × compiled | peak MiB train eager / SSMRec |")
print("|---|---|---|---|---|---|---|---|---|")
def ms(p, key):
    return p[key]["median_ms"] if p else None
def cell(v, digits):
    # Three significant digits below 100 ms (a batch of one takes well under a millisecond).
    return "—" if v is None else f"{v:.{digits}f}" if v >= 100 else f"{v:.3g}"
def ratio(a, b):
    return "—" if a is None else f"{a / b:.1f}"
for line in open(sys.argv[1]):
    r = json.loads(line)
    o, p, c = r["ssmrec"], r["peer"], r.get("compiled")
    ot, oi = o["train_step_ms"], o["infer_batch_ms"]
    pt, pi, ct, ci = ms(p, "train_step"), ms(p, "infer_batch"), ms(c, "train_step"), ms(c, "infer_batch")
    memory = f"{p['peak_rss_mb_train'] / 1.048576:.0f}" if p else "—"
    print(f"| {o['model']} | {o['batch']} | {o['length']} | {o['items']} | {cell(pt, 0)} / {cell(ct, 0)} / {cell(ot, 0)} | {ratio(pt, ot)} / {ratio(ct, ot)} "
          f"| {cell(pi, 1)} / {cell(ci, 1)} / {cell(oi, 1)} | {ratio(pi, oi)} / {ratio(ci, oi)} | {memory} / {o['peak_resident_mib']:.0f} |")
EOF
