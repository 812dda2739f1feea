#!/usr/bin/env bash
# Server bench (issue 3), not run in CI:
#  1. GET / PUT / conditional GET (304) throughput of `larder serve --store memory://` against a
#     minimal hyper server over a map in memory (bench/larder-bench's baseline_hyper, the
#     baseline of bench/server-callgrind.sh and bench/server-wrk.sh too), reported as ratios;
#     and the same GET
#     through `/unstorage` (unstorage's protocol).
#  2. Streaming: a 1 GiB PUT and GET through the server on the fs store; the server's peak RSS
#     (VmHWM) must stay under 100 MiB.
#
# Env: SIZE (object bytes, default 1024), DURATION (secs per run, default 5), CONNS (default 16),
#      BIG (bytes of the streaming check, default 1 GiB).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-1024}
DURATION=${DURATION:-5}
CONNS=${CONNS:-16}
BIG=${BIG:-1073741824}
LARDER_PORT=17070
BASE_PORT=17071

if ! command -v wrk >/dev/null; then
  if command -v oha >/dev/null; then :; else
    echo "== installing wrk"
    (apt-get install -y wrk >/dev/null 2>&1 || sudo apt-get install -y wrk >/dev/null 2>&1) \
      || cargo install oha
  fi
fi
command -v curl >/dev/null || { echo "curl is required" >&2; exit 1; }

echo "== building (release)"
cargo build --release -q --manifest-path bench/larder-bench/Cargo.toml --bin baseline_hyper
cargo build --release -q -p larder-cli
SERVE=(target/release/larder serve)
echo "server binary: ${SERVE[*]}"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
    sleep 0.1
  done
  echo "port $1 never opened" >&2
  return 1
}

head -c "$SIZE" /dev/zero | tr '\0' 'x' >"$WORK/body"
ETAG="\"$(sha256sum "$WORK/body" | cut -d' ' -f1)\""
cat >"$WORK/put.lua" <<EOF
wrk.method = "PUT"
local f = io.open("$WORK/body", "rb"); wrk.body = f:read("*a"); f:close()
EOF
# The conditional GET's script for the ETag of the object at URL (each server has its own).
cond_script() {
  local etag
  etag=$(curl -s -D - -o /dev/null "$1" | awk -F': ' 'tolower($1)=="etag" {print $2}' | tr -d '\r')
  printf "wrk.headers[\"If-None-Match\"] = '%s'\n" "$etag" >"$2"
}

# Requests/sec of one run: load URL [lua script].
rps() {
  local url=$1 script=${2:-}
  if command -v wrk >/dev/null; then
    local args=(-t2 -c"$CONNS" -d"${DURATION}s")
    [ -n "$script" ] && args+=(-s "$script")
    wrk "${args[@]}" "$url" | awk '/Requests\/sec/ {print $2}'
  else
    local args=(-z "${DURATION}s" -c "$CONNS" --no-tui -j)
    case "$script" in
      *put.lua) args+=(-m PUT -D "$WORK/body") ;;
      *cond*.lua) args+=(-H "If-None-Match: $(sed -n "s/.*= '\(.*\)'/\1/p" "$script")") ;;
    esac
    oha "${args[@]}" "$url" | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["requestsPerSec"])'
  fi
}

echo "== throughput: $SIZE-byte objects, $CONNS connections, ${DURATION}s per run"
"${SERVE[@]}" --listen "127.0.0.1:$LARDER_PORT" --store memory:// >"$WORK/larder.log" 2>&1 &
PIDS+=($!)
bench/larder-bench/target/release/baseline_hyper "$BASE_PORT" 2>/dev/null &
PIDS+=($!)
wait_port $LARDER_PORT
wait_port $BASE_PORT
L=http://127.0.0.1:$LARDER_PORT/v1/objects/bench/obj
B=http://127.0.0.1:$BASE_PORT/v1/objects/bench/obj
curl -sf -X PUT --data-binary @"$WORK/body" "$L" >/dev/null
curl -sf -X PUT --data-binary @"$WORK/body" "$B" >/dev/null
got=$(curl -s -o /dev/null -w '%{http_code}' -H "If-None-Match: $ETAG" "$L")
[ "$got" = 304 ] || { echo "conditional GET answered $got, not 304" >&2; exit 1; }
printf '%-18s %14s %14s %8s\n' op "larder req/s" "hyper req/s" ratio
for op in GET PUT GET-304 GET-unstorage; do
  url=$L
  case $op in
    GET) s="" ;;
    PUT) s="$WORK/put.lua" ;;
    # Each server's current ETag (the PUT run before moved the baseline's version counter).
    GET-304) s="$WORK/cond-larder.lua"; cond_script "$L" "$s"; cond_script "$B" "$WORK/cond-base.lua" ;;
    # The same object through unstorage's protocol (/unstorage, docs/unstorage.md).
    GET-unstorage) s="" url=http://127.0.0.1:$LARDER_PORT/unstorage/bench/obj ;;
  esac
  # The PUT run writes the same key over and over; the GET runs read it.
  l=$(rps "$url" "$s")
  [ "$op" = GET-304 ] && s="$WORK/cond-base.lua"
  b=$(rps "$B" "$s")
  printf '%-18s %14.0f %14.0f %8.2f\n' "$op" "$l" "$b" "$(echo "$l / $b" | bc -l)"
done
kill "${PIDS[@]}" 2>/dev/null || true
wait 2>/dev/null || true
PIDS=()

echo "== streaming: $BIG bytes through the fs store"
mkdir -p "$WORK/data"
"${SERVE[@]}" --listen "127.0.0.1:$LARDER_PORT" --store "fs://$WORK/data" \
  --max-object-size $((BIG * 2)) >"$WORK/larder-fs.log" 2>&1 &
SPID=$!
PIDS+=($SPID)
wait_port $LARDER_PORT
start=$(date +%s.%N)
code=$(head -c "$BIG" /dev/zero | curl -s -o /dev/null -w '%{http_code}' -T - \
  "http://127.0.0.1:$LARDER_PORT/v1/objects/big")
mid=$(date +%s.%N)
[ "$code" = 201 ] || { echo "1 GiB PUT answered $code" >&2; exit 1; }
size=$(curl -s -o /dev/null -w '%{size_download}' "http://127.0.0.1:$LARDER_PORT/v1/objects/big")
end=$(date +%s.%N)
[ "$size" = "$BIG" ] || { echo "GET returned $size bytes" >&2; exit 1; }
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$SPID/status")
printf 'PUT %.1f MiB/s, GET %.1f MiB/s\n' \
  "$(echo "$BIG / 1048576 / ($mid - $start)" | bc -l)" \
  "$(echo "$BIG / 1048576 / ($end - $mid)" | bc -l)"
printf 'server peak RSS (VmHWM): %.1f MiB (limit 100 MiB)\n' "$(echo "$hwm_kb / 1024" | bc -l)"
if [ "$hwm_kb" -ge $((100 * 1024)) ]; then
  echo "FAIL: peak RSS over 100 MiB" >&2
  exit 1
fi
echo "OK"
