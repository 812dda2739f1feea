#!/usr/bin/env bash
# Wall-clock companion of bench/server-callgrind.sh: requests per second under `wrk -t2 -c32` of
# each server given, in one run, repetitions interleaved (server by server, REPS times), so that a
# load swing on this noisy machine hits every server alike. Prints the median per server and case.
# Usage: bench/server-wrk.sh NAME=KIND:PATH ...
#   KIND: hyper (bench/larder-bench's baseline_hyper), hyper-sha256 (the same, a PUT's ETag the
#   SHA-256 of its body), larder (`larder serve --store memory://`),
#   node (a directory holding bench/node's server.mjs and its node_modules: unstorage's server).
# Env: DUR (seconds per wrk run, default 5), REPS (default 3), ONLY (get|304|put).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"; work=$(mktemp -d); port=18400; pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
head -c 4096 /dev/zero | tr "\\0" x > "$work/body4k"
printf 'wrk.method = "PUT"\nlocal f = io.open("%s", "rb"); wrk.body = f:read("*a"); f:close()\n' \
  "$work/body4k" > "$work/put.lua"
names=(); urls=()
for spec in "$@"; do
  name="${spec%%=*}"; rest="${spec#*=}"; kind="${rest%%:*}"; path="$(realpath "${rest#*:}")"
  port=$((port + 1))
  case $kind in
    hyper) "$path" $port >/dev/null 2>&1 & url=http://127.0.0.1:$port ;;
    hyper-sha256) "$path" $port --sha256 >/dev/null 2>&1 & url=http://127.0.0.1:$port ;;
    larder) "$path" serve --store memory:// --listen 127.0.0.1:$port >/dev/null 2>&1 &
      url=http://127.0.0.1:$port/v1/objects ;;
    node) (cd "$path" && exec node server.mjs $port) >/dev/null 2>&1 & url=http://127.0.0.1:$port ;;
  esac
  pids+=($!); names+=("$name"); urls+=("$url")
done
sleep 2
etags=()
for url in "${urls[@]}"; do
  curl -s -o /dev/null -X PUT --data-binary @"$work/body4k" "$url/hot"
  etags+=("$(curl -s -D - -o /dev/null "$url/hot" | awk -F': ' 'tolower($1)=="etag" {print $2}' | tr -d '\r')")
done
rps() { wrk -t2 -c32 -d"${DUR:-5}"s "$@" 2>/dev/null | awk '/Requests\/sec/ {print $2}'; }
for case in get 304 put; do
  [ -n "${ONLY:-}" ] && [ "$ONLY" != "$case" ] && continue
  declare -A got=()
  for rep in $(seq "${REPS:-3}"); do
    for i in "${!urls[@]}"; do
      url=${urls[$i]}
      case $case in
        get) r=$(rps "$url/hot") ;;
        304) if [ -n "${etags[$i]}" ]; then r=$(rps -H "If-None-Match: ${etags[$i]}" "$url/hot"); else r=; fi ;;
        put) r=$(rps -s "$work/put.lua" "$url/p") ;;
      esac
      got[$i]="${got[$i]:-} $r"
    done
  done
  for i in "${!urls[@]}"; do
    med=$(printf '%s\n' ${got[$i]} | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "n/a"}')
    printf '%s\t%s\t%s\treq/s (median; runs:%s)\n' "$case" "${names[$i]}" "$med" "${got[$i]}"
  done
  unset got
done
