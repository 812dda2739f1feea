# S3: moto 5.2 (PyPI) in a venv under /opt/larder-ci, served single-threaded (its threaded
# server can lose an update in concurrent If-Match races), bucket `larder-test`.
# Sourced by .ci/run with `set -euo pipefail`.
LARDER_CI_DIR="${LARDER_CI_DIR:-/opt/larder-ci}"
s3_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/9000") 2>/dev/null && { exec 3>&- 3<&-; return 0; }; return 1; }
if [ ! -x "$LARDER_CI_DIR/moto/bin/moto_server" ]; then
  mkdir -p "$LARDER_CI_DIR"
  python3 -m venv "$LARDER_CI_DIR/moto"
  "$LARDER_CI_DIR/moto/bin/pip" install -q 'moto[server]==5.2.*'
fi
if ! s3_port_open; then
  nohup "$LARDER_CI_DIR/moto/bin/python" -c '
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple
run_simple("127.0.0.1", 9000, DomainDispatcherApplication(create_backend_app), threaded=False)
' >"$LARDER_CI_DIR/moto.log" 2>&1 &
  for _ in $(seq 1 120); do s3_port_open && break; sleep 0.5; done
  s3_port_open || { echo "moto did not come up on 127.0.0.1:9000" >&2; return 1; }
fi
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
# Create the bucket (an error when it exists is fine).
curl -s -o /dev/null -X PUT http://127.0.0.1:9000/larder-test || true
export LARDER_TEST_S3_URL="${LARDER_TEST_S3_URL:-s3://larder-test/ci?endpoint=http://127.0.0.1:9000&region=us-east-1&allow_http=true}"
