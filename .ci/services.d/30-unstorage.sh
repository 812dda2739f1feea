# unstorage's own `http` driver for crates/larder-server/tests/unstorage.rs: the npm package
# pinned in crates/larder-server/tests/unstorage-client (package.json + package-lock.json),
# installed with `npm ci` into the CI cache; reinstalled only when the lockfile changes.
LARDER_CI_CACHE="${LARDER_CI_CACHE:-/opt/larder-ci}"
_us_src="$(pwd)/crates/larder-server/tests/unstorage-client"
_us_dir="$LARDER_CI_CACHE/unstorage-client"
if ! cmp -s "$_us_src/package-lock.json" "$_us_dir/package-lock.json" \
  || [ ! -f "$_us_dir/node_modules/unstorage/package.json" ]; then
  mkdir -p "$_us_dir"
  cp "$_us_src/package.json" "$_us_src/package-lock.json" "$_us_dir/"
  (cd "$_us_dir" && npm ci --no-audit --no-fund >"$LARDER_CI_CACHE/unstorage-install.log" 2>&1) \
    || { echo "npm ci of unstorage failed; see $LARDER_CI_CACHE/unstorage-install.log" >&2; return 1; }
fi
export LARDER_TEST_UNSTORAGE_DIR="$_us_dir"
unset _us_src _us_dir
