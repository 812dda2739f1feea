#!/usr/bin/env bash
# S3 endpoint bench (issue 14), not run in CI: the same boto3 workload against
# `larder serve --s3-listen` (release build, fs store on local disk) and against SeaweedFS's S3
# (.ci/services.d/15-seaweedfs.sh, disk-backed) on the same machine, in the same run:
#   - small objects: SMALL_N PUTs then GETs of 4 KiB objects from 8 threads (ops/s);
#   - one BIG-byte object (default 512 MiB) uploaded and downloaded with boto3's managed
#     multipart transfer (8 MiB parts, 10 threads) (MiB/s);
# and Larder's peak RSS (VmHWM). Ratios are Larder / SeaweedFS (above 1: Larder faster).
# Env: BIG (bytes, default 512 MiB), SMALL_N (default 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
BIG=${BIG:-536870912}
SMALL_N=${SMALL_N:-2000}
PORT=17270 S3PORT=17271
# shellcheck disable=SC1091
source .ci/services.d/15-seaweedfs.sh
# shellcheck disable=SC1091
source .ci/services.d/40-s3-clients.sh
PY="$LARDER_TEST_S3_PYTHON"
cargo build --release -q -p larder-cli
WORK=$(mktemp -d)
SPID=
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
head -c "$BIG" /dev/urandom >"$WORK/body"
cat >"$WORK/larder.toml" <<'TOML'
[s3]
[[s3.keys]]
access_key = "benchkey"
secret_key = "bench-secret-0123456789"
scope = "write"
TOML
target/release/larder serve --listen "127.0.0.1:$PORT" --s3-listen "127.0.0.1:$S3PORT" \
  --store "fs://$WORK/store" --config "$WORK/larder.toml" --max-object-size $((BIG * 2)) \
  >"$WORK/serve.log" 2>&1 &
SPID=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done

run() { # endpoint key secret bucket create-bucket?
  "$PY" - "$WORK/body" "$1" "$2" "$3" "$4" "$5" "$SMALL_N" <<'PY'
import sys, time, threading, boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
body, endpoint, key, secret, bucket, create, n = sys.argv[1:8]
n = int(n)
def client():
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16))
s3 = client()
if create == "1":
    s3.create_bucket(Bucket=bucket)
prefix = f"bench-{time.time_ns()}"
data = b"x" * 4096
def many(op):
    def work(i):
        c = client()
        for j in range(i, n, 8):
            op(c, f"{prefix}/small/{j}")
    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    t0 = time.time()
    for t in ts: t.start()
    for t in ts: t.join()
    return n / (time.time() - t0)
put_ops = many(lambda c, k: c.put_object(Bucket=bucket, Key=k, Body=data))
get_ops = many(lambda c, k: c.get_object(Bucket=bucket, Key=k)["Body"].read())
cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=10)
t0 = time.time(); s3.upload_file(body, bucket, prefix + "/big", Config=cfg); t1 = time.time()
s3.download_file(bucket, prefix + "/big", body + ".back", Config=cfg); t2 = time.time()
assert open(body, "rb").read() == open(body + ".back", "rb").read(), "download differs"
size = len(open(body, "rb").read()) / 1048576
keys = [f"{prefix}/small/{j}" for j in range(n)] + [prefix + "/big"]
for i in range(0, len(keys), 1000):
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
print(put_ops, get_ops, size / (t1 - t0), size / (t2 - t1))
PY
}
read -r l_put l_get l_up l_down < <(run "http://127.0.0.1:$S3PORT" benchkey bench-secret-0123456789 bench-bucket 1)
hwm_kb=$(awk '/VmHWM/ {print $2}' "/proc/$SPID/status")
read -r s_put s_get s_up s_down < <(run "http://127.0.0.1:$SW_S3_PORT" test test larder-test 0)
r() { echo "$1 / $2" | bc -l; }
printf 'small 4 KiB PUT, 8 threads:  larder %7.0f ops/s  seaweedfs %7.0f ops/s  ratio %.2f\n' "$l_put" "$s_put" "$(r "$l_put" "$s_put")"
printf 'small 4 KiB GET, 8 threads:  larder %7.0f ops/s  seaweedfs %7.0f ops/s  ratio %.2f\n' "$l_get" "$s_get" "$(r "$l_get" "$s_get")"
printf '%d MiB upload (multipart):  larder %7.1f MiB/s  seaweedfs %7.1f MiB/s  ratio %.2f\n' "$((BIG >> 20))" "$l_up" "$s_up" "$(r "$l_up" "$s_up")"
printf '%d MiB download:            larder %7.1f MiB/s  seaweedfs %7.1f MiB/s  ratio %.2f\n' "$((BIG >> 20))" "$l_down" "$s_down" "$(r "$l_down" "$s_down")"
printf 'larder serve peak RSS (VmHWM): %.1f MiB\n' "$(echo "$hwm_kb / 1024" | bc -l)"
