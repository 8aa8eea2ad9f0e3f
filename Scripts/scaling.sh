#!/usr/bin/env bash
# How cost grows: `ssmrec bench` over history length (B 32, V 3,417), batch size (L 50, V 3,417)
# and catalogue size (B 256, L 50; the blocked softmax and top-K from 100,000 items on) for every
# model, then `ssmrec plot --bench` draws each sweep as a log–log SVG and a Markdown table of the
# medians is printed. About 20 minutes on a 2-core machine; nothing else should run meanwhile.
#
#   bash Scripts/scaling.sh                                  # every model, every sweep
#   MODELS="mamba4rec sasrec" SWEEPS=length bash Scripts/scaling.sh
#
# Raw JSON lines go to $OUT/scaling-SWEEP.jsonl (default .build/scaling), the plots to
# $IMAGES/scaling-SWEEP.svg (default Docs/Images).
set -euo pipefail
cd "$(dirname "$0")/.."
models="${MODELS:-mamba4rec sigma ssd4rec sasrec gru4rec}"
sweeps="${SWEEPS:-length batch items}"
repeats="${REPEATS:-5}"
out="${OUT:-.build/scaling}"
images="${IMAGES:-Docs/Images}"
mkdir -p "$out" "$images"
swift build -c release --product ssmrec >/dev/null
bin="$PWD/.build/release/ssmrec"
for sweep in $sweeps; do
  case "$sweep" in
    length) values="50 100 200 500 1000" fixed=(--batch 32 --items 3417) flag=--length ;;
    batch) values="1 4 16 64 256 1024" fixed=(--length 50 --items 3417) flag=--batch ;;
    items) values="1000 10000 100000 1000000" fixed=(--batch 256 --length 50) flag=--items ;;
    *) echo "scaling: unknown sweep $sweep (length, batch or items)" >&2; exit 2 ;;
  esac
  file="$out/scaling-$sweep.jsonl"
  : > "$file"
  for m in $models; do
    for v in $values; do
      "$bin" bench --model "$m" "${fixed[@]}" "$flag" "$v" --repeats "$repeats" --json >> "$file"
    done
  done
  "$bin" plot --bench "$file" --x "$sweep" --output "$images/scaling-$sweep.svg"
  python3 - "$file" "$sweep" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
key = sys.argv[2]
values = sorted({r[key] for r in rows})
models = list(dict.fromkeys(r["model"] for r in rows))
print(f"\n{key}: training step / inference batch, ms (medians)\n")
print("| model | " + " | ".join(f"{key} {v:,}" for v in values) + " |")
print("|---|" + "---|" * len(values))
for m in models:
    cells = []
    for v in values:
        r = next((r for r in rows if r["model"] == m and r[key] == v), None)
        cells.append("—" if r is None else f"{r['train_step_ms']:.3g} / {r['infer_batch_ms']:.3g}")
    print(f"| {m} | " + " | ".join(cells) + " |")
PY
done
