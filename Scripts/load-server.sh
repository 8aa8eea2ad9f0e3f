#!/usr/bin/env bash
# Load test of ssmrec-server from a second process on loopback (wrk): a release build serves a
# checkpoint; wrk posts one event per request for a fixed set of concurrent users, then asks
# for their top 10, and prints throughput and latency percentiles. Bounded: DURATION seconds per
# phase (default 15), CONNECTIONS connections (default 32), USERS users (default 64).
#   bash Scripts/load-server.sh CHECKPOINT DATA [ITEMS]
# ITEMS: the largest integer item token to post (default 1000); tokens must be the dataset's.
set -euo pipefail
cd "$(dirname "$0")/.."
checkpoint="$1"; data="$2"; items="${3:-1000}"
duration="${DURATION:-15}"; connections="${CONNECTIONS:-32}"; users="${USERS:-64}"
command -v wrk >/dev/null || { echo "load-server: needs wrk (apt-get install wrk)" >&2; exit 1; }
(cd Server && swift build -c release --product ssmrec-server >/dev/null)
server="$(cd Server && swift build -c release --show-bin-path)/ssmrec-server"
work="$(mktemp -d "${TMPDIR:-/tmp}/ssmrec-load.XXXXXX")"
"$server" --checkpoint "$checkpoint" --data "$data" --database "$work/events.sqlite" --port 0 \
  --log-level warning ${SERVER_FLAGS:-} > "$work/server.out" &
pid=$!
trap 'kill -KILL $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 600); do grep -q "^listening on " "$work/server.out" && break; sleep 0.1; done
port="$(sed -n 's/^listening on //p' "$work/server.out")"
[ -n "$port" ] || { echo "load-server: the server did not start" >&2; exit 1; }
curl -s "http://127.0.0.1:$port/healthz"; echo
export LOAD_USERS="$users" LOAD_ITEMS="$items"
echo "== events: $users users, $connections connections, ${duration}s"
wrk -t2 -c"$connections" -d"${duration}s" --latency -s Scripts/load/events.lua "http://127.0.0.1:$port"
echo "== recommendations (top 10, seen excluded): $users users, $connections connections, ${duration}s"
wrk -t2 -c"$connections" -d"${duration}s" --latency -s Scripts/load/recommendations.lua "http://127.0.0.1:$port"
curl -s "http://127.0.0.1:$port/metrics" | grep -E "^ssmrec_(events_total|stream_rebuilds_total|cached_users)"
