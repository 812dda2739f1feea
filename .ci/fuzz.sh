#!/usr/bin/env bash
# CI: every fuzz target in fuzz/ runs for a few seconds from its committed corpus (a smoke test
# that the targets build and that nothing known crashes; the real runs are longer and local,
# see fuzz/README.md). Installs cargo-fuzz if missing. Fuzzing needs nightly features, which
# RUSTC_BOOTSTRAP=1 enables on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${LARDER_FUZZ_SECONDS:-5}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
# No sanitizer: the code under test is safe Rust, and what the fuzzer hunts is panics
# (overflow checks and debug assertions are on); the build is much quicker without ASan.
# CI builds the targets unoptimized (`--dev`): they run for seconds, so build time matters and
# speed does not; long local runs use the default release build (fuzz/README.md).
FLAGS=(--sanitizer none)
if [ "${LARDER_FUZZ_DEV:-1}" = 1 ]; then FLAGS+=(--dev); fi
echo "== cargo fuzz build"
cargo fuzz build "${FLAGS[@]}"
for target in $(cargo fuzz list); do
  echo "== fuzz $target (${SECONDS_PER_TARGET}s)"
  mkdir -p "fuzz/corpus/$target"
  # A scratch copy of the corpus, so CI never changes the committed one.
  scratch="$(mktemp -d)"
  cp -r "fuzz/corpus/$target/." "$scratch/"
  cargo fuzz run "${FLAGS[@]}" "$target" "$scratch" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -print_final_stats=0
  rm -rf "$scratch"
done
