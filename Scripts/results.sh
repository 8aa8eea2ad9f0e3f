#!/usr/bin/env bash
# The runs behind Docs/Results.md: each of the five models trained on ML-100K with its official
# hyperparameters (`ssmrec train` defaults) and MAX_ITEM_LIST_LENGTH 50, full-ranking test
# metrics from the best validation epoch. An official run allows 200–300 epochs with early
# stopping (patience 10); on a 2-core machine that takes hours per model, so each model gets
# an epoch cap (RESULTS_EPOCHS, "model:epochs …"), which the table reports.
#
#   bash Scripts/results.sh                                   # writes $RESULTS_DIR/table.md
#   RESULTS_EPOCHS="gru4rec:200" bash Scripts/results.sh      # one model, full schedule
#   RESULTS_DATA=path/Amazon_Beauty.inter RESULTS_FLAGS="--objective all" RESULTS_TAG=beauty-all \
#     RESULTS_EPOCHS="mamba4rec:300" bash Scripts/results.sh  # another dataset, other flags
#
# RESULTS_DATA replaces ML-100K, RESULTS_FLAGS is added to every `ssmrec train`, and
# RESULTS_TAG names the runs' folders (MODEL-TAG) and the table (table-TAG.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash Scripts/install-deps.sh
data="${RESULTS_DATA:-$(bash Scripts/fetch-ml100k.sh | tail -n 1)}"
flags=(${RESULTS_FLAGS:-})
tag="${RESULTS_TAG:+-$RESULTS_TAG}"
runs="${RESULTS_DIR:-$PWD/.build/results}"
plan="${RESULTS_EPOCHS:-gru4rec:30 sasrec:10 mamba4rec:10 sigma:4 ssd4rec:1}"
mkdir -p "$runs"
swift build -c release --product ssmrec >/dev/null
bin="$(swift build -c release --show-bin-path)/ssmrec"
for entry in $plan; do
  model="${entry%%:*}" epochs="${entry##*:}"
  echo "[results] $model: up to $epochs epochs → $runs/$model$tag"
  # A failed run is reported and the plan goes on (its row then says "not run").
  if ! "$bin" train --model "$model" --data "$data" --max-length 50 --epochs "$epochs" --output "$runs/$model$tag" --plain \
    ${flags[@]+"${flags[@]}"} > "$runs/$model$tag.log" 2>&1; then
    echo "[results] $model failed:" >&2
    tail -n 3 "$runs/$model$tag.log" >&2
  fi
  tail -n 1 "$runs/$model$tag.log"
done
python3 - "$runs" "$tag" $plan > "$runs/table$tag.md" <<'EOF'
import json, os, sys
runs, tag, plan = sys.argv[1], sys.argv[2], [e.split(":") for e in sys.argv[3:]]
print("| model | epochs run (cap) | best epoch | test HR@10 | test NDCG@10 | test MRR@10 | valid NDCG@10 | s/epoch | peak MiB |")
print("|---|---|---|---|---|---|---|---|---|")
for model, cap in plan:
    path = os.path.join(runs, model + tag, "metrics.json")
    if not os.path.exists(path):
        print(f"| {model} | not run | | | | | | | |")
        continue
    m = json.load(open(path))
    t, v = m["test"], m["valid"]
    print(f"| {model} | {m['epochs']} ({cap}) | {m['best_epoch']} | {t['hr@10']:.4f} | {t['ndcg@10']:.4f} | {t['mrr@10']:.4f} "
          f"| {v['ndcg@10']:.4f} | {m['seconds_per_epoch']:.0f} | {m['peak_resident_mib']:.0f} |")
EOF
cat "$runs/table$tag.md"
