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
"$bin" evaluate --checkpoint "$work/run/best.safetensors" --data "$work/tiny.inter" --json > "$work/eval.json" 2> "$work/eval.err"
grep -q ndcg@10 "$work/eval.json"
grep -q "batching packed up to 50" "$work/eval.err"
# The checkpoint records the batching of its training run: evaluate uses it without a flag.
"$bin" train --model sasrec --data "$work/tiny.inter" --epochs 1 --batch-size 64 --hidden-size 16 --max-length 200 --output "$work/run200" --plain > /dev/null
"$bin" evaluate --checkpoint "$work/run200/best.safetensors" --data "$work/tiny.inter" 2> "$work/eval200.err"
grep -q "batching packed up to 200" "$work/eval200.err"
"$bin" evaluate --checkpoint "$work/run200/best.safetensors" --data "$work/tiny.inter" --max-length 7 2> "$work/eval7.err"
grep -q "batching packed up to 7 instead of the checkpoint's packed up to 200" "$work/eval7.err"
"$bin" recommend --checkpoint "$work/run/best.safetensors" --data "$work/tiny.inter" --history i1,i2,i3 -k 5
"$bin" recommend --checkpoint "$work/run/best.safetensors" --data "$work/tiny.inter" --users u1,u2
# A run from a YAML configuration with a flag overriding it, repeated from the resolved
# config.json it wrote: the same test metrics. A sampled loss on the way.
printf 'model: gru4rec\ndata: %s\nepochs: 3\nbatch-size: 64\nhidden-size: 16\nloss: sampled-softmax\nnegatives: 7\n' \
  "$work/tiny.inter" > "$work/run.yaml"
"$bin" train --config "$work/run.yaml" --epochs 2 --output "$work/from-yaml" --plain > /dev/null
grep -q '"epochs" : 2' "$work/from-yaml/config.json"
grep -q '"loss" : "sampled-softmax"' "$work/from-yaml/config.json"
"$bin" train --config "$work/from-yaml/config.json" --output "$work/repeated" --plain > /dev/null
python3 -c "import json, sys; a, b = (json.load(open(p))['test'] for p in sys.argv[1:]); assert a == b, (a, b)" \
  "$work/from-yaml/metrics.json" "$work/repeated/metrics.json"
for loss in bpr bce; do
  "$bin" train --model gru4rec --data "$work/tiny.inter" --epochs 1 --batch-size 64 --hidden-size 16 --loss "$loss" \
    --negatives 5 --proposal popularity --output "$work/$loss" --plain > /dev/null
done
printf 'model: gru4rec\nepoch: 3\n' > "$work/misspelt.yaml"
printf '{"model": "gru4rec", "epochs": "three"}' > "$work/mistyped.json"
printf 'model: [gru4rec\n' > "$work/broken.yaml"
printf 'model: gru4rec\n' > "$work/run.toml"
# Model settings: any key of the model's configuration, from a file; the flags win over them.
printf 'heads: 4\nhiddenDropout: 0.1\n' > "$work/sasrec.yaml"
"$bin" train --model sasrec --data "$work/tiny.inter" --epochs 1 --batch-size 64 --hidden-size 16 --dropout 0.3 \
  --model-settings "$work/sasrec.yaml" --output "$work/sasrec-settings" --plain > /dev/null
python3 -c "import json, sys; c = json.load(open(sys.argv[1])); assert (c['heads'], c['hiddenDropout'], c['hiddenSize']) == (4, 0.3, 16), c" \
  "$work/sasrec-settings/model-configuration.json"
printf '{"headz": 4}' > "$work/misspelt-settings.json"
printf '{"heads": "four"}' > "$work/mistyped-settings.json"
printf '{"itemCount": 3}' > "$work/other-items-settings.json"
printf '{"heads": 4' > "$work/broken-settings.json"

# Curves and test metrics of two runs as SVG (well-formed XML, one polyline per run and panel).
"$bin" plot "$work/run" "$work/run200" --names "mamba4rec,sasrec L200" --output "$work/runs.svg"
python3 -c "import sys, xml.dom.minidom as m; d = m.parse(sys.argv[1]); n = len(d.getElementsByTagName('polyline')); assert n == 4, n" "$work/runs.svg"

# The serving example answers requests from standard input, one line each, errors included.
swift build --product Serving >/dev/null
printf 'i1 i2 i3\ni4,i5\nnope i1\n' | "$(swift build --show-bin-path)/Serving" "$work/run/best.safetensors" "$work/tiny.inter" 5 > "$work/served.txt"
cat "$work/served.txt"
[ "$(wc -l < "$work/served.txt")" -eq 3 ] || { echo "check-cli: the serving example answered $(wc -l < "$work/served.txt") lines, not 3" >&2; exit 1; }
grep -q "^error: unknown item(s) nope" "$work/served.txt" || { echo "check-cli: the serving example did not refuse the unknown item" >&2; exit 1; }

# Bad input: every case must fail with an exit status in 1...127 (a trap or crash exits with
# 128 + its signal) and exactly one "Error:" line; a runtime error (the arguments were
# well-formed) must not be followed by the usage text, which only a usage error earns.
cases=0
check_failure() {
  local kind="$1" name="$2"; shift 2
  cases=$((cases + 1))
  local status=0
  "$@" > "$work/out.txt" 2> "$work/err.txt" || status=$?
  if [ "$status" -eq 0 ]; then echo "check-cli: '$name' should have failed" >&2; cat "$work/out.txt" >&2; exit 1; fi
  if [ "$status" -ge 128 ]; then
    echo "check-cli: '$name' crashed (exit status $status)" >&2; cat "$work/err.txt" >&2; exit 1
  fi
  local errors; errors="$(grep -c '^Error: ' "$work/err.txt" || true)"
  if [ "$errors" -ne 1 ]; then
    echo "check-cli: '$name' printed $errors 'Error:' lines, not 1" >&2; cat "$work/err.txt" >&2; exit 1
  fi
  if [ "$kind" = runtime ] && grep -q '^Usage:' "$work/err.txt"; then
    echo "check-cli: '$name' is a runtime error but printed the usage" >&2; cat "$work/err.txt" >&2; exit 1
  fi
  echo "ok ($kind, status $status, $name): $(grep -m1 '^Error: ' "$work/err.txt")"
}
runtime() { check_failure runtime "$@"; }
usage() { check_failure usage "$@"; }

# A safetensors file from a header (JSON text) and a data section of N zero bytes.
safetensors() {
  python3 - "$1" "$2" "$3" <<'PY'
import struct, sys
header, size, path = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
open(path, "wb").write(struct.pack("<Q", len(header)) + header + bytes(size))
PY
}
# The trained checkpoint with one configuration value replaced (a corrupt configuration).
with_config() {
  python3 - "$run/best.safetensors" "$1" "$2" "$3" <<'PY'
import json, struct, sys
source, key, value, path = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
raw = open(source, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
config = json.loads(header["__metadata__"]["config"])
config[key] = value
header["__metadata__"]["config"] = json.dumps(config)
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
open(path, "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + n:])
PY
}
inter() { printf 'user_id:token\titem_id:token\ttimestamp:float\n'; printf "$@"; }

run="$work/run"
ckpt="$run/best.safetensors"
tiny="$work/tiny.inter"
head -c 200 "$ckpt" > "$work/half.safetensors"
printf 'abc' > "$work/short.safetensors"
printf '\xff\x00\x00\x00\x00\x00\x00\x00{}' > "$work/past-end.safetensors"
entry='"dtype": "F32", "shape": [2], "data_offsets": '
safetensors '{"x": {'"$entry"'[0, 8]}, "x": {'"$entry"'[8, 16]}}' 16 "$work/duplicate.safetensors"
safetensors '{"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}, "y": {'"$entry"'[8, 16]}}' 16 "$work/overlap.safetensors"
safetensors '{"x": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}' 8 "$work/fractional.safetensors"
safetensors '{"x": {"dtype": "F32", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 8]}}' 8 "$work/overflow.safetensors"
safetensors '{"x": {"dtype": "F32", "shape": [true], "data_offsets": [0, 4]}}' 4 "$work/boolean.safetensors"
safetensors '{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}' 12 "$work/unused.safetensors"
safetensors '{"x": {'"$entry"'[0, 8]}}' 8 "$work/plain.safetensors"
safetensors '{"__metadata__": {"format": "ssmrec-checkpoint-1", "model": "mamba4rec", "config": "{"}}' 0 "$work/bad-config.safetensors"
safetensors '{"__metadata__": {"format": "ssmrec-checkpoint-1", "model": "transformer9", "config": "{}"}}' 0 "$work/unknown-kind.safetensors"
with_config itemCount 2000000000 "$work/huge-items.safetensors"
with_config itemCount 1099511627776 "$work/items-beyond-32-bits.safetensors"
with_config innerSize 1099511627776 "$work/huge-inner.safetensors"
with_config layers 1073741824 "$work/huge-layers.safetensors"
with_config expansion 9223372036854775807 "$work/overflowing-expansion.safetensors"
with_config hiddenSize -16 "$work/negative-width.safetensors"
with_config dropout '"high"' "$work/mistyped.safetensors"
inter 'u1\t[PAD]\t1\n' > "$work/pad-item.inter"
inter '[PAD]\ti1\t1\n' > "$work/pad-user.inter"
inter 'u1\ti1\tnan\n' > "$work/nan-time.inter"
inter 'u1\ti1\tinf\n' > "$work/inf-time.inter"
inter 'u1\ti1\tyesterday\n' > "$work/word-time.inter"
inter 'u1\ti1\n' > "$work/short-line.inter"
inter '' > "$work/header-only.inter"
: > "$work/empty.inter"
printf 'user_id:token\ttimestamp:float\nu1\t1\n' > "$work/no-item-column.inter"
inter 'u%s\ti1\t1\n' 1 2 3 > "$work/one-each.inter"
inter 'u%s\ti%s\t%s\n' 1 1 1 1 2 2 2 1 1 2 2 2 > "$work/two-each.inter"
printf '1::2::5\n' > "$work/ratings.dat"
printf '1\t2\t5\tlater\n' > "$work/u.data"
printf 'user_id,item_id\n1,2\n' > "$work/no-time.csv"
printf 'u1 i1\n' > "$work/data.txt"
mkdir -p "$work/empty-folder"
{ inter ''; for u in $(seq 1 40); do for t in $(seq 0 9); do printf 'u%s\ti%s\t%s\n' "$u" $(((u + t) % 30)) "$t"; done; done; } > "$work/wider.inter"

runtime "missing dataset file" "$bin" info --data "$work/none.inter"
runtime "file of unknown format" "$bin" info --data "$work/data.txt"
runtime "folder without a .inter file" "$bin" info --data "$work/empty-folder"
runtime "empty file" "$bin" info --data "$work/empty.inter"
runtime "header only" "$bin" info --data "$work/header-only.inter"
runtime "line with too few fields" "$bin" info --data "$work/short-line.inter"
runtime "missing item column" "$bin" info --data "$work/no-item-column.inter"
runtime "[PAD] as an item" "$bin" info --data "$work/pad-item.inter"
runtime "[PAD] as a user" "$bin" info --data "$work/pad-user.inter"
runtime "NaN timestamp" "$bin" info --data "$work/nan-time.inter"
runtime "infinite timestamp" "$bin" info --data "$work/inf-time.inter"
runtime "timestamp that is a word" "$bin" info --data "$work/word-time.inter"
runtime "ratings.dat line with three fields" "$bin" info --data "$work/ratings.dat"
runtime "u.data timestamp that is a word" "$bin" info --data "$work/u.data"
runtime "CSV without a timestamp column" "$bin" info --data "$work/no-time.csv"
runtime "filter that removes everything" "$bin" info --data "$tiny" --user-interval "[1000,inf)"
usage "interval that does not parse" "$bin" info --data "$tiny" --user-interval "[5,inf"
usage "unknown model" "$bin" train --model transformer9 --data "$tiny"
usage "zero epochs" "$bin" train --model sigma --data "$tiny" --epochs 0
usage "NaN learning rate" "$bin" train --model mamba4rec --data "$tiny" --learning-rate nan
usage "width beyond the limit" "$bin" train --model mamba4rec --data "$tiny" --hidden-size 99999999999
usage "negative layer count" "$bin" train --model mamba4rec --data "$tiny" --layers=-3
usage "dropout above 1" "$bin" train --model gru4rec --data "$tiny" --dropout 1.5
usage "negative maximum length" "$bin" train --model sasrec --data "$tiny" --max-length=-5
runtime "no training instance" "$bin" train --model mamba4rec --data "$work/one-each.inter" --output "$work/r1" --plain
runtime "no validation instance" "$bin" train --model mamba4rec --data "$work/two-each.inter" --output "$work/r2" --plain
runtime "output folder that cannot be created" "$bin" train --model gru4rec --data "$tiny" --epochs 1 --output /proc/ssmrec-run --plain
runtime "missing checkpoint" "$bin" evaluate --checkpoint "$work/none.safetensors" --data "$tiny"
runtime "checkpoint that is a folder" "$bin" evaluate --checkpoint "$work/empty-folder" --data "$tiny"
runtime "truncated checkpoint" "$bin" evaluate --checkpoint "$work/half.safetensors" --data "$tiny"
runtime "checkpoint of three bytes" "$bin" evaluate --checkpoint "$work/short.safetensors" --data "$tiny"
runtime "header past the end of the file" "$bin" evaluate --checkpoint "$work/past-end.safetensors" --data "$tiny"
runtime "duplicate tensor names" "$bin" evaluate --checkpoint "$work/duplicate.safetensors" --data "$tiny"
runtime "overlapping tensors" "$bin" evaluate --checkpoint "$work/overlap.safetensors" --data "$tiny"
runtime "fractional shape" "$bin" evaluate --checkpoint "$work/fractional.safetensors" --data "$tiny"
runtime "boolean shape" "$bin" evaluate --checkpoint "$work/boolean.safetensors" --data "$tiny"
runtime "shape whose size overflows" "$bin" evaluate --checkpoint "$work/overflow.safetensors" --data "$tiny"
runtime "unused data bytes" "$bin" evaluate --checkpoint "$work/unused.safetensors" --data "$tiny"
runtime "safetensors file that is not a checkpoint" "$bin" evaluate --checkpoint "$work/plain.safetensors" --data "$tiny"
runtime "configuration that is not JSON" "$bin" evaluate --checkpoint "$work/bad-config.safetensors" --data "$tiny"
runtime "unknown model kind" "$bin" evaluate --checkpoint "$work/unknown-kind.safetensors" --data "$tiny"
runtime "huge itemCount" "$bin" evaluate --checkpoint "$work/huge-items.safetensors" --data "$tiny"
runtime "itemCount beyond 32 bits" "$bin" evaluate --checkpoint "$work/items-beyond-32-bits.safetensors" --data "$tiny"
runtime "huge innerSize" "$bin" evaluate --checkpoint "$work/huge-inner.safetensors" --data "$tiny"
runtime "huge layer count" "$bin" evaluate --checkpoint "$work/huge-layers.safetensors" --data "$tiny"
runtime "expansion that overflows" "$bin" evaluate --checkpoint "$work/overflowing-expansion.safetensors" --data "$tiny"
runtime "negative width" "$bin" evaluate --checkpoint "$work/negative-width.safetensors" --data "$tiny"
runtime "mistyped configuration value" "$bin" evaluate --checkpoint "$work/mistyped.safetensors" --data "$tiny"
runtime "evaluate on a dataset of other items" "$bin" evaluate --checkpoint "$ckpt" --data "$work/wider.inter"
usage "cut-off of zero" "$bin" evaluate --checkpoint "$ckpt" --data "$tiny" --k 0
usage "cut-off list with a hole" "$bin" evaluate --checkpoint "$ckpt" --data "$tiny" --k 5,,10
usage "zero maximum length for evaluate" "$bin" evaluate --checkpoint "$ckpt" --data "$tiny" --max-length 0
runtime "recommend on a dataset of other items" "$bin" recommend --checkpoint "$ckpt" --data "$work/wider.inter" --history i1
runtime "unknown item" "$bin" recommend --checkpoint "$ckpt" --data "$tiny" --history nope
runtime "[PAD] as a history item" "$bin" recommend --checkpoint "$ckpt" --data "$tiny" --history "[PAD]"
runtime "empty history" "$bin" recommend --checkpoint "$ckpt" --data "$tiny" --history ","
runtime "unknown user" "$bin" recommend --checkpoint "$ckpt" --data "$tiny" --users nobody
usage "negative maximum length for recommend" "$bin" recommend --checkpoint "$ckpt" --data "$tiny" --history i1 --max-length=-1
usage "zero k" "$bin" recommend --checkpoint "$ckpt" --data "$tiny" --history i1 -k 0
usage "both history and users" "$bin" recommend --checkpoint "$ckpt" --data "$tiny" --history i1 --users u1
usage "benchmark batch beyond the limit" "$bin" bench --model gru4rec --batch 1000000000 --length 50 --items 100
usage "benchmark length of 1" "$bin" bench --model gru4rec --length 1
runtime "plot of a folder without a training log" "$bin" plot "$work/empty-folder" --output "$work/none.svg"
usage "plot with a name per run missing" "$bin" plot "$work/run" "$work/run200" --names one
usage "configuration with a misspelt setting" "$bin" train --config "$work/misspelt.yaml" --data "$work/tiny.inter"
usage "configuration with a mistyped setting" "$bin" train --config "$work/mistyped.json" --data "$work/tiny.inter"
usage "configuration that is not YAML" "$bin" train --config "$work/broken.yaml" --data "$work/tiny.inter"
usage "configuration of another format" "$bin" train --config "$work/run.toml"
usage "model settings that are not JSON" "$bin" train --model sasrec --data "$work/tiny.inter" --model-settings "$work/broken-settings.json"
usage "model settings of another format" "$bin" train --model sasrec --data "$work/tiny.inter" --model-settings "$work/run.toml"
usage "missing model settings file" "$bin" train --model sasrec --data "$work/tiny.inter" --model-settings "$work/none.json"
runtime "model settings with a misspelt key" "$bin" train --model sasrec --data "$work/tiny.inter" --model-settings "$work/misspelt-settings.json"
runtime "model settings with a mistyped value" "$bin" train --model sasrec --data "$work/tiny.inter" --model-settings "$work/mistyped-settings.json"
runtime "model settings for another catalogue" "$bin" train --model sasrec --data "$work/tiny.inter" --model-settings "$work/other-items-settings.json"
usage "missing configuration file" "$bin" train --config "$work/none.yaml"
usage "training without a model" "$bin" train --data "$work/tiny.inter"
usage "unknown loss" "$bin" train --model gru4rec --data "$work/tiny.inter" --loss hinge
usage "zero negatives" "$bin" train --model gru4rec --data "$work/tiny.inter" --loss bpr --negatives 0
usage "unknown proposal" "$bin" train --model gru4rec --data "$work/tiny.inter" --loss bpr --proposal zipf
usage "streaming window that is not one" "$bin" evaluate --checkpoint "$run/best.safetensors" --data "$work/tiny.inter" --window sideways
runtime "unbounded window for a model without a recurrent state" "$bin" evaluate --checkpoint "$work/run200/best.safetensors" --data "$work/tiny.inter" --window unbounded
echo "check-cli: all commands behaved; $cases bad inputs refused without a crash"
