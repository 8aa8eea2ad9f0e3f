#!/usr/bin/env bash
# End-to-end test of ssmrec-server (debug builds): trains a small checkpoint, starts the server on
# a loopback port, posts events for several users and compares every answer with `ssmrec
# recommend --history`, sends malformed requests (each must get a 4xx with a JSON error), kills
# the server with SIGKILL, restarts it on the same database and expects the same answers.
set -euo pipefail
cd "$(dirname "$0")/.."
# The server stores events with GRDB, which links the system SQLite.
if [ ! -f /usr/include/sqlite3.h ]; then
  SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "[deps] installing libsqlite3-dev"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libsqlite3-dev >/dev/null
fi
swift build --product ssmrec >/dev/null
ssmrec="$(swift build --show-bin-path)/ssmrec"
(cd Server && swift build --product ssmrec-server >/dev/null)
server="$(cd Server && swift build --show-bin-path)/ssmrec-server"
work="$(mktemp -d "${TMPDIR:-/tmp}/ssmrec-server.XXXXXX")"
trap 'pkill -KILL -f "$work/events.sqlite" 2>/dev/null || true; rm -rf "$work"' EXIT

# 60 users over 45 items; the window is 8, so long histories stream past it.
{
  printf 'user_id:token\titem_id:token\ttimestamp:float\n'
  for u in $(seq 1 60); do for t in $(seq 0 $((5 + u % 9))); do printf 'u%s\t%s\t%s\n' "$u" $((1 + (u * 7 + t * 11) % 45)) "$t"; done; done
} > "$work/tiny.inter"
for model in mamba4rec gru4rec sasrec; do
  "$ssmrec" train --model "$model" --data "$work/tiny.inter" --epochs 2 --batch-size 64 --hidden-size 16 \
    --max-length 8 --output "$work/$model" --plain > /dev/null
done

python3 Scripts/check_server.py --server "$server" --ssmrec "$ssmrec" --data "$work/tiny.inter" --work "$work" \
  --checkpoints "$work/mamba4rec/best.safetensors" "$work/gru4rec/best.safetensors" "$work/sasrec/best.safetensors"
