# S3 clients for the S3 endpoint tests (crates/larder-cli/tests/s3_endpoint.rs): boto3 and the
# aws CLI (PyPI `awscli`) in a venv. The tests find them through LARDER_TEST_S3_PYTHON (a
# python with boto3) and LARDER_TEST_AWS_CLI.
LARDER_CI_CACHE="${LARDER_CI_CACHE:-/opt/larder-ci}"
S3_CLIENTS="$LARDER_CI_CACHE/s3-clients"
if ! "$S3_CLIENTS/bin/python3" -c 'import boto3' 2>/dev/null || [ ! -x "$S3_CLIENTS/bin/aws" ]; then
  mkdir -p "$LARDER_CI_CACHE"
  python3 -m venv "$S3_CLIENTS"
  "$S3_CLIENTS/bin/python3" -m pip install -q 'boto3>=1.36' 'awscli>=1.36' \
    >"$LARDER_CI_CACHE/s3-clients-install.log" 2>&1 \
    || { echo "installing boto3 and awscli failed: see $LARDER_CI_CACHE/s3-clients-install.log" >&2; return 1; }
fi
export LARDER_TEST_S3_PYTHON="${LARDER_TEST_S3_PYTHON:-$S3_CLIENTS/bin/python3}"
export LARDER_TEST_AWS_CLI="${LARDER_TEST_AWS_CLI:-$S3_CLIENTS/bin/aws}"
