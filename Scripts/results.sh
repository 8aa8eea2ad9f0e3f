#!/usr/bin/env bash
# The runs behind Docs/Results.md: models trained with their official hyperparameters (`ssmrec
# train` defaults) and MAX_ITEM_LIST_LENGTH 50, to early stopping (patience 10) or an epoch cap,
# full-ranking test metrics from the best validation epoch, one run per model and seed. Prints
# a Markdown table (mean ± standard deviation over the seeds, and each seed's figures) and
# writes it to $RESULTS_DIR/table-TAG.md.
#
#   bash Scripts/results.sh                                        # ML-100K, the default plan
#   RESULTS_EPOCHS="gru4rec:200" bash Scripts/results.sh           # one model, full schedule
#   RESULTS_DATA=path/Amazon_Beauty.inter RESULTS_FLAGS="--objective all" RESULTS_TAG=beauty-all \
#     RESULTS_SEEDS="2020 2021 2022" RESULTS_EPOCHS="mamba4rec:300 sasrec:200 gru4rec:200" bash Scripts/results.sh
#   RESULTS_DATA=path/Amazon_Beauty.inter RESULTS_TAG=beauty-sigma-paper RESULTS_EPOCHS="sigma:300" \
#     RESULTS_FLAGS_sigma='--model-settings {"flip":{"keepingLast":{"keep":5}}}' bash Scripts/results.sh
#   RESULTS_DATA=path/Amazon_Beauty.inter RESULTS_TAG=beauty-sigma-paper-d03 RESULTS_EPOCHS="sigma:300" \
#     RESULTS_FLAGS_sigma='--dropout 0.3 --model-settings {"flip":{"keepingLast":{"keep":5}}}' bash Scripts/results.sh
#   RESULTS_DATA=path/Amazon_Beauty.inter RESULTS_FLAGS="--objective last" RESULTS_TAG=beauty-last \
#     RESULTS_SEEDS="2020 2021 2022" RESULTS_EPOCHS="gru4rec:200 sasrec:200 mamba4rec:300" bash Scripts/results.sh
#   RESULTS_TAG=official RESULTS_SEEDS="2020 2021 2022" RESULTS_EPOCHS="gru4rec:200 mamba4rec:300 sasrec:200" \
#     bash Scripts/results.sh                                      # ML-100K, the official protocol to early stopping
#   RESULTS_TAG=official RESULTS_EPOCHS="sigma:200" bash Scripts/results.sh   # SIGMA, parity mode, ML-100K
#   RESULTS_TAG=b256 RESULTS_SEEDS="2020 2021 2022" RESULTS_EPOCHS="gru4rec:200" RESULTS_FLAGS_gru4rec="--batch-size 256" \
#     bash Scripts/results.sh                                      # GRU4Rec, ML-100K, the peer's batch
#   RESULTS_TAG=paper-flip RESULTS_EPOCHS="sigma:200" \
#     RESULTS_FLAGS_sigma='--model-settings {"flip":{"keepingLast":{"keep":5}}}' bash Scripts/results.sh
#
# RESULTS_DATA replaces ML-100K; RESULTS_FLAGS is added to every `ssmrec train` and
# RESULTS_FLAGS_<model> to that model's (a --model-settings value that is JSON text is written
# to a file first); RESULTS_SEEDS lists the seeds (default: the trainer's, 2020); RESULTS_TAG
# names the runs' folders (MODEL-TAG-sSEED) and the table. Each run's folder keeps its
# resolved config.json, so `ssmrec train --config FOLDER/config.json` repeats it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Scripts/install-deps.sh
data="${RESULTS_DATA:-$(bash Scripts/fetch-ml100k.sh | tail -n 1)}"
tag="${RESULTS_TAG:+-$RESULTS_TAG}"
runs="${RESULTS_DIR:-$PWD/.build/results}"
plan="${RESULTS_EPOCHS:-gru4rec:30 sasrec:10 mamba4rec:10 sigma:4 ssd4rec:1}"
seeds="${RESULTS_SEEDS:-2020}"
mkdir -p "$runs"
swift build -c release --product ssmrec >/dev/null
bin="$(swift build -c release --show-bin-path)/ssmrec"
for entry in $plan; do
  model="${entry%%:*}" epochs="${entry##*:}"
  flags=(${RESULTS_FLAGS:-})
  model_flags_name="RESULTS_FLAGS_$model"
  read -r -a model_flags <<< "${!model_flags_name:-}"
  # A --model-settings value given as JSON text goes to a file the trainer can read.
  for i in "${!model_flags[@]}"; do
    if [ "${model_flags[$i]}" = "--model-settings" ] && [ "${model_flags[$((i + 1))]:0:1}" = "{" ]; then
      printf '%s\n' "${model_flags[$((i + 1))]}" > "$runs/$model$tag-settings.json"
      model_flags[$((i + 1))]="$runs/$model$tag-settings.json"
    fi
  done
  for seed in $seeds; do
    folder="$runs/$model$tag-s$seed"
    echo "[results] $model, seed $seed: up to $epochs epochs → $folder"
    # A failed run is reported and the plan goes on (its row then says "not run").
    if ! "$bin" train --model "$model" --data "$data" --max-length 50 --epochs "$epochs" --seed "$seed" --output "$folder" \
      --plain ${flags[@]+"${flags[@]}"} ${model_flags[@]+"${model_flags[@]}"} > "$folder.log" 2>&1; then
      echo "[results] $model, seed $seed failed:" >&2
      tail -n 3 "$folder.log" >&2
    fi
    tail -n 1 "$folder.log"
  done
done
python3 - "$runs" "$tag" "$seeds" $plan > "$runs/table$tag.md" <<'EOF'
import json, os, statistics, sys
runs, tag, seeds, plan = sys.argv[1], sys.argv[2], sys.argv[3].split(), [e.split(":") for e in sys.argv[4:]]
def spread(values, digits=4):
    mean = statistics.fmean(values)
    return f"{mean:.{digits}f}" + (f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else "")
print("| model | test HR@10 | test NDCG@10 | test MRR@10 | valid NDCG@10 | runs (HR@10 / NDCG@10) | epochs (best), cap | s/epoch | peak MiB |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for model, cap in plan:
    found = []
    for seed in seeds:
        path = os.path.join(runs, f"{model}{tag}-s{seed}", "metrics.json")
        if os.path.exists(path):
            found.append(json.load(open(path)))
    if not found:
        print(f"| {model} | not run | | | | | | | |")
        continue
    test = lambda k: [m["test"][k] for m in found]
    each = ", ".join(f"{m['test']['hr@10']:.4f} / {m['test']['ndcg@10']:.4f}" for m in found)
    epochs = ", ".join(f"{m['epochs']} ({m['best_epoch']})" for m in found)
    seconds = [m["seconds_per_epoch"] for m in found]
    print(f"| {model} | {spread(test('hr@10'))} | {spread(test('ndcg@10'))} | {spread(test('mrr@10'))} "
          f"| {spread([m['valid']['ndcg@10'] for m in found])} | {each} | {epochs}, {cap} "
          f"| {min(seconds):.1f}–{max(seconds):.1f} | {max(m['peak_resident_mib'] for m in found):.0f} |")
EOF
cat "$runs/table$tag.md"
