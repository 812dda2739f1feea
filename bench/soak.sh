#!/usr/bin/env bash
# Long soak (issue 11), not run in CI: the soak test of crates/larder-cli/tests/soak.rs (16
# clients, every operation of the native API, over memory, fs, sqlite, redis and postgres)
# run for SECS seconds per store (default 600), printing the server's RSS and open descriptors
# every REPORT seconds (default 30). The test's own checks apply (no 5xx, no reset, no lost
# update, bodies match their ETags, RSS and descriptors flat after a warm-up of a quarter of
# the run, at most a minute); a slow leak shows as a rising RSS column.
#
# Usage: bench/soak.sh [STORE...]   (STORE: memory fs sqlite redis postgres; default all)
# Env: SECS, REPORT, RELEASE=1 (an optimized server and client; slower to build),
#      LARDER_TEST_REDIS_URL / LARDER_TEST_POSTGRES_URL (default: the machine's services).
set -euo pipefail
cd "$(dirname "$0")/.."
export LARDER_SOAK_SECS="${SECS:-600}"
export LARDER_SOAK_REPORT_SECS="${REPORT:-30}"
export LARDER_TEST_REDIS_URL="${LARDER_TEST_REDIS_URL:-redis://127.0.0.1:6379/}"
export LARDER_TEST_POSTGRES_URL="${LARDER_TEST_POSTGRES_URL:-postgres://root@127.0.0.1:5432/test}"
export LARDER_REQUIRE_SERVICES=1
profile=()
[ "${RELEASE:-0}" = 1 ] && profile=(--release)
filters=()
for store in "$@"; do filters+=("soak_$store"); done
echo "== soak: ${LARDER_SOAK_SECS} s per store, report every ${LARDER_SOAK_REPORT_SECS} s; load: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo test "${profile[@]}" -q -p larder-cli --test soak -- --test-threads=1 --nocapture "${filters[@]}"
echo "== load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
