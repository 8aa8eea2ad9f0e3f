#!/usr/bin/env bash
# Fetches MovieLens-100K in RecBole's atomic format (ml-100k.inter & co.) from the recbole wheel
# on PyPI into a cache folder, and checks that it holds 100,000 interactions.
# Prints the dataset folder on its last line.
#   SSMREC_DATA (default ~/.cache/ssmrec/data): where ml-100k/ goes.
set -euo pipefail
data_root="${SSMREC_DATA:-$HOME/.cache/ssmrec/data}"
target="$data_root/ml-100k"
inter="$target/ml-100k.inter"

count_ok() { [ -f "$inter" ] && [ "$(($(wc -l < "$inter") - 1))" -eq 100000 ]; }

if ! count_ok; then
  command -v python3 >/dev/null 2>&1 || { echo "fetch-ml100k: python3 (with pip) is needed to download the recbole wheel" >&2; exit 1; }
  scratch="$(mktemp -d "${TMPDIR:-/tmp}/ssmrec-ml100k.XXXXXX")"
  trap 'rm -rf "$scratch"' EXIT
  echo "[fetch] downloading recbole==1.2.1 (wheel only) for its bundled ml-100k" >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$scratch" "recbole==1.2.1" >&2
  wheel="$(ls "$scratch"/recbole-1.2.1-*.whl | head -n 1)"
  mkdir -p "$target"
  python3 - "$wheel" "$target" <<'PY'
import sys, zipfile, os
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("recbole/dataset_example/ml-100k/") and not n.endswith("/")]
    if not names:
        sys.exit("fetch-ml100k: the wheel has no recbole/dataset_example/ml-100k/")
    for n in names:
        with z.open(n) as src, open(os.path.join(target, os.path.basename(n)), "wb") as dst:
            dst.write(src.read())
PY
fi
count_ok || { echo "fetch-ml100k: $inter does not hold 100,000 interactions" >&2; exit 1; }
echo "[fetch] ml-100k ready: $(($(wc -l < "$inter") - 1)) interactions" >&2
echo "$target"
