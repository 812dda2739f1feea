# S3 emulator for the `s3` driver tests: moto (PyPI `moto[server]`), which enforces the S3
# conditionals the way AWS does (If-Match / If-None-Match on PutObject, If-Match on DeleteObject,
# If-None-Match on CompleteMultipartUpload) except one: it ignores If-Match on
# CompleteMultipartUpload, declared below so the tests skip that one check here (SeaweedFS,
# 15-seaweedfs.sh, enforces it and is checked instead). Run single-threaded: moto's threaded server checks and writes without a lock (it lost
# one update in 18 concurrent If-Match races), which would make the CAS race test meaningless.
# Requests must be SigV4-signed; any keys work.
LARDER_CI_CACHE="${LARDER_CI_CACHE:-/opt/larder-ci}"
S3_PORT="${LARDER_S3_PORT:-9000}"
s3_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && { exec 3>&- 3<&-; return 0; }; return 1; }
MOTO_PY="$LARDER_CI_CACHE/moto/bin/python3"
if ! "$MOTO_PY" -c 'import moto.moto_server.werkzeug_app, boto3' 2>/dev/null; then
  mkdir -p "$LARDER_CI_CACHE"
  python3 -m venv "$LARDER_CI_CACHE/moto"
  "$MOTO_PY" -m pip install -q 'moto[server]>=5.2,<5.3' boto3 >"$LARDER_CI_CACHE/moto-install.log" 2>&1
fi
if ! s3_port_open "$S3_PORT"; then
  nohup "$MOTO_PY" -c '
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app),
           threaded=False, use_reloader=False)
' "$S3_PORT" >"$LARDER_CI_CACHE/moto.log" 2>&1 &
  for _ in $(seq 1 60); do s3_port_open "$S3_PORT" && break; sleep 0.5; done
  s3_port_open "$S3_PORT" || { echo "moto did not come up on :$S3_PORT" >&2; return 1; }
fi
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
"$MOTO_PY" - "$S3_PORT" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
try:
    s3.create_bucket(Bucket="larder-test")
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
PY
export LARDER_TEST_S3_GAPS="${LARDER_TEST_S3_GAPS-complete-if-match}"
# One emulator process serves every test at once on a shared, loaded machine, so answers can
# take longer than the drivers' default 5 s bounds (meant for real services; the fail-fast
# behaviour is tested against a silent listener in crates/larder-server/tests/backend_outage.rs).
EMULATOR_BOUNDS="timeout_ms=60000&retry_timeout_ms=60000"
export LARDER_TEST_S3_URL="${LARDER_TEST_S3_URL:-s3://larder-test/ci?endpoint=http://127.0.0.1:$S3_PORT&region=us-east-1&allow_http=true&$EMULATOR_BOUNDS}"
