#!/usr/bin/env bash
# How long training takes: for Mamba4Rec, SASRec, GRU4Rec and SIGMA (the paper's flip) on
# ML-100K and Amazon Beauty, one epoch of the official prefix protocol padded and packed, one
# epoch of the all-position objective (causal models), and then a run to early stopping (the
# all-position objective for the causal models, SIGMA's packed official protocol) with its
# epochs, minutes (training and validation) and test NDCG@10. Prints a Markdown table and
# writes it to $EPOCHS_DIR/epochs.md.
#
#   bash Scripts/epochs.sh                                   # everything: about two hours on 2 cores
#   EPOCHS_CONVERGE=0 bash Scripts/epochs.sh                 # the one-epoch columns only
#   EPOCHS_MODELS="gru4rec sasrec" EPOCHS_DATASETS=beauty bash Scripts/epochs.sh
#
# Amazon Beauty is read from $BEAUTY (default ../shared/data/Amazon_Beauty/Amazon_Beauty.inter);
# ML-100K is fetched by Scripts/fetch-ml100k.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash Scripts/install-deps.sh
models="${EPOCHS_MODELS:-mamba4rec sasrec gru4rec sigma}"
datasets="${EPOCHS_DATASETS:-ml100k beauty}"
converge="${EPOCHS_CONVERGE:-1}"
runs="${EPOCHS_DIR:-$PWD/.build/epochs}"
mkdir -p "$runs"
swift build -c release --product ssmrec >/dev/null
bin="$(swift build -c release --show-bin-path)/ssmrec"
printf '{"flip": {"keepingLast": {"keep": 5}}}\n' > "$runs/sigma-paper-flip.json"

data_path() {
  case "$1" in
    ml100k) bash Scripts/fetch-ml100k.sh | tail -n 1 ;;
    beauty)
      local path="${BEAUTY:-../shared/data/Amazon_Beauty/Amazon_Beauty.inter}"
      [[ -f "$path" ]] || { echo "epochs.sh: no Amazon Beauty at $path (set BEAUTY)" >&2; exit 1; }
      echo "$path" ;;
    *) echo "epochs.sh: unknown dataset $1 (ml100k or beauty)" >&2; exit 1 ;;
  esac
}

# train NAME ARGS…: one run into $runs/NAME, its log next to it.
train() {
  local name="$1"
  shift
  echo "[epochs] $name" >&2
  "$bin" train --output "$runs/$name" --plain "$@" > "$runs/$name.log" 2>&1 || {
    echo "[epochs] $name failed:" >&2
    tail -n 3 "$runs/$name.log" >&2
  }
}

rows=()
for dataset in $datasets; do
  data="$(data_path "$dataset")"
  for model in $models; do
    common=(--model "$model" --data "$data" --max-length 50)
    causal=1
    if [[ "$model" == sigma ]]; then
      common+=(--model-settings "$runs/sigma-paper-flip.json")
      causal=0
    fi
    tag="$dataset-$model"
    train "$tag-padded" "${common[@]}" --epochs 1 --padded
    train "$tag-packed" "${common[@]}" --epochs 1
    if [[ "$causal" == 1 ]]; then
      train "$tag-all" "${common[@]}" --epochs 1 --objective all
      full=(--objective all)
    else
      full=()
    fi
    if [[ "$converge" == 1 ]]; then train "$tag-converged" "${common[@]}" ${full[@]+"${full[@]}"}; fi
    rows+=("$dataset $model")
  done
done

python3 - "$runs" "${rows[@]}" <<'EOF' | tee "$runs/epochs.md"
import json, os, sys
runs, rows = sys.argv[1], [r.split() for r in sys.argv[2:]]
names = {"ml100k": "ML-100K", "beauty": "Amazon Beauty", "sigma": "SIGMA (paper's flip)", "mamba4rec": "Mamba4Rec",
         "sasrec": "SASRec", "gru4rec": "GRU4Rec"}
def metrics(name):
    path = os.path.join(runs, name, "metrics.json")
    return json.load(open(path)) if os.path.exists(path) else None
def seconds(name):
    m = metrics(name)
    return f"{m['seconds_per_epoch']:.1f}" if m else "—"
print("| dataset | model | s/epoch padded | s/epoch packed | × | s/epoch all-position | to early stopping: epochs (best) | minutes | test NDCG@10 |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for dataset, model in rows:
    tag = f"{dataset}-{model}"
    padded, packed = metrics(tag + "-padded"), metrics(tag + "-packed")
    ratio = f"{padded['seconds_per_epoch'] / packed['seconds_per_epoch']:.1f}" if padded and packed else "—"
    done = metrics(tag + "-converged")
    if done:
        log = [json.loads(line) for line in open(os.path.join(runs, tag + "-converged", "log.jsonl")) if line.strip()]
        minutes = sum(e.get("trainSeconds", 0) + e.get("validationSeconds", 0) for e in log) / 60
        stop = "" if done["stopped_early"] else ", not stopped"
        converged = f"{done['epochs']} ({done['best_epoch']}){stop} | {minutes:.1f} | {done['test']['ndcg@10']:.4f}"
    else:
        converged = "— | — | —"
    print(f"| {names[dataset]} | {names[model]} | {seconds(tag + '-padded')} | {seconds(tag + '-packed')} | {ratio} "
          f"| {seconds(tag + '-all')} | {converged} |")
EOF
