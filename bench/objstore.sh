#!/usr/bin/env bash
# Object-store bench (issue 5), not run in CI: a large conditional upload through
# `larder serve --store s3://…` (spooled, multipart, condition on the completion) against the
# same bytes uploaded straight to the same S3 server by boto3's managed multipart upload
# (8 MiB parts, 10 threads), reported as a ratio; then the download both ways, and the server's
# peak RSS (VmHWM), which the spool keeps at a few parts whatever the size.
#
# Needs an S3 server: by default SeaweedFS from .ci/services.d/15-seaweedfs.sh (disk-backed,
# so a large object does not sit in the server's memory), and boto3 from the moto venv of
# 10-s3.sh. Env: BIG (bytes, default 1 GiB).
set -euo pipefail
cd "$(dirname "$0")/.."
BIG=${BIG:-1073741824}
PORT=17170
# shellcheck disable=SC1091
source .ci/services.d/10-s3.sh
# shellcheck disable=SC1091
source .ci/services.d/15-seaweedfs.sh
PY="${LARDER_CI_CACHE:-/opt/larder-ci}/moto/bin/python3"
cargo build --release -q -p larder-cli
WORK=$(mktemp -d)
SPID=
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
head -c "$BIG" /dev/urandom >"$WORK/body"
PREFIX="bench-$$-$(date +%s)"
STORE="s3://larder-test/$PREFIX?endpoint=http://127.0.0.1:$SW_S3_PORT&region=us-east-1&allow_http=true&max_object_size=$((BIG * 2))"
target/release/larder serve --listen "127.0.0.1:$PORT" --store "$STORE" \
  --max-object-size $((BIG * 2)) >"$WORK/serve.log" 2>&1 &
SPID=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
export LARDER_URL="http://127.0.0.1:$PORT"

t0=$(date +%s.%N)
target/release/larder put big "$WORK/body" --if-none-match '*' >/dev/null
t1=$(date +%s.%N)
target/release/larder get big -o "$WORK/back"
t2=$(date +%s.%N)
cmp -s "$WORK/body" "$WORK/back" || { echo "download differs" >&2; exit 1; }
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$SPID/status")

read -r b_put b_get < <("$PY" - "$WORK/body" "$SW_S3_PORT" "$PREFIX" <<'PY'
import sys, time, boto3
from boto3.s3.transfer import TransferConfig
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[2]}", region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=10)
key = sys.argv[3] + "/boto3-big"
t0 = time.time(); s3.upload_file(sys.argv[1], "larder-test", key, Config=cfg); t1 = time.time()
s3.download_file("larder-test", key, sys.argv[1] + ".boto3", Config=cfg); t2 = time.time()
s3.delete_object(Bucket="larder-test", Key=key)
print(t1 - t0, t2 - t1)
PY
)
target/release/larder rm big >/dev/null
mib=$(echo "$BIG / 1048576" | bc -l)
l_put=$(echo "$t1 - $t0" | bc -l); l_get=$(echo "$t2 - $t1" | bc -l)
printf 'object: %.0f MiB on SeaweedFS\n' "$mib"
printf 'PUT  larder (CLI -> server -> spool -> multipart, If-None-Match at completion): %6.1f MiB/s; boto3 direct: %6.1f MiB/s; ratio %.2f\n' \
  "$(echo "$mib / $l_put" | bc -l)" "$(echo "$mib / $b_put" | bc -l)" "$(echo "$b_put / $l_put" | bc -l)"
printf 'GET  larder (server -> CLI):                                                   %6.1f MiB/s; boto3 direct: %6.1f MiB/s; ratio %.2f\n' \
  "$(echo "$mib / $l_get" | bc -l)" "$(echo "$mib / $b_get" | bc -l)" "$(echo "$b_get / $l_get" | bc -l)"
printf 'server peak RSS (VmHWM): %.1f MiB\n' "$(echo "$hwm_kb / 1024" | bc -l)"
