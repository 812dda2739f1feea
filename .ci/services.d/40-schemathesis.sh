# schemathesis (PyPI), for crates/larder-server/tests/schemathesis.rs: it reads docs/openapi.json
# from a live `larder serve` and checks that no request gets a 5xx and every response matches
# the document. Installed into a venv in the CI cache; the test finds it through
# LARDER_SCHEMATHESIS.
LARDER_CI_CACHE="${LARDER_CI_CACHE:-/opt/larder-ci}"
ST_BIN="$LARDER_CI_CACHE/schemathesis/bin/schemathesis"
if ! "$ST_BIN" --version >/dev/null 2>&1; then
  mkdir -p "$LARDER_CI_CACHE"
  python3 -m venv "$LARDER_CI_CACHE/schemathesis"
  "$LARDER_CI_CACHE/schemathesis/bin/python3" -m pip install -q 'schemathesis>=4,<5' \
    >"$LARDER_CI_CACHE/schemathesis-install.log" 2>&1
fi
export LARDER_SCHEMATHESIS="$ST_BIN"
