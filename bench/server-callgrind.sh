#!/usr/bin/env bash
# Repeatable per-request cost of the HTTP server: callgrind instruction counts of the server process
# over a fixed number of keep-alive requests (one wrk connection, after 200 warm-up requests).
# Usage: bench/server-callgrind.sh larder:target/release/larder TAG   (or hyper:PATH/baseline_hyper)
# Prints "case n=REQUESTS Ir=INSTRUCTIONS allocs=MALLOC_CALLS" (malloc, calloc and realloc calls
# counted from callgrind's call graph); divide by n. Valgrind has no SHA-NI: a PUT counts the
# software SHA-256 (subtract sha2::sha256::compress256, see callgrind_annotate; KEEP=DIR keeps
# the profiles there).
set -euo pipefail
kind="${1%%:*}"; bin="$(realpath "${1#*:}")"; tag="$2"; port=${PORT:-18199}
work=$(mktemp -d); trap "rm -rf $work" EXIT; here="$(cd "$(dirname "$0")" && pwd)"; cd "$work"
head -c 4096 /dev/zero | tr "\\0" x > body4k; cp "$here/count.lua" .
if [ "$kind" = larder ]; then
  cmd=("$bin" serve --store memory:// --listen 127.0.0.1:$port); url=http://127.0.0.1:$port/v1/objects
else
  cmd=("$bin" $port); url=http://127.0.0.1:$port
fi
run_case() { # name N wrkargs...
  local name=$1 n=$2; shift 2
  rm -f cg.$tag.out*
  valgrind --tool=callgrind --callgrind-out-file=cg.$tag.out "${cmd[@]}" >/dev/null 2>cg.$tag.log &
  local vp=$!
  for i in $(seq 100); do curl -s -o /dev/null "$url/" && break; sleep 0.5; done
  curl -s -o /dev/null -X PUT --data-binary @body4k "$url/hot"
  local etag=$(curl -s -D - -o /dev/null "$url/hot" | awk -F': ' 'tolower($1)=="etag" {print $2}' | tr -d '\r')
  # warm-up (not collected)
  N=200 wrk -t1 -c1 -d5s -s count.lua "$@" "${EXTRA[@]/@ETAG@/$etag}" >/dev/null 2>&1 || true
  callgrind_control -z $vp >/dev/null
  N=$n wrk -t1 -c1 -d15s -s count.lua "$@" "${EXTRA[@]/@ETAG@/$etag}" > wrk.$tag.txt 2>&1 || true
  callgrind_control -d $vp >/dev/null
  kill -TERM $vp; wait $vp 2>/dev/null || true
  local f=$(ls cg.$tag.out.1)
  local ir=$(grep -m1 '^summary:\|^totals:' $f | awk '{print $2}')
  local reqs=$(awk '/requests in/ {print $1}' wrk.$tag.txt)
  local allocs=$(python3 - "$f" <<'PY'
import re, sys
names, callee, n = {}, None, 0
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line)
    if m:
        if m.group(3):
            names[m.group(2)] = m.group(3).strip()
        callee = names.get(m.group(2)) if m.group(1) == "cfn" else None
    elif line.startswith("calls=") and callee in ("malloc", "calloc", "realloc"):
        n += int(line[6:].split()[0])
print(n)
PY
)
  echo "$name n=$reqs Ir=$ir allocs=$allocs"
  # KEEP=DIR keeps the profile, for callgrind_annotate.
  [ -n "${KEEP:-}" ] && cp "$f" "$KEEP/callgrind.$tag.${name// /-}.out"
  return 0
}
EXTRA=()
[ -z "${ONLY:-}" -o "${ONLY:-}" = get ] && run_case "GET hit" ${N:-2000} "$url/hot"
EXTRA=(-H "If-None-Match: @ETAG@")
[ -z "${ONLY:-}" -o "${ONLY:-}" = 304 ] && run_case "GET 304" ${N:-2000} "$url/hot"
EXTRA=()
[ -z "${ONLY:-}" -o "${ONLY:-}" = put ] && BODY=$work/body4k run_case "PUT 4KiB" ${N:-2000} "$url/p"
