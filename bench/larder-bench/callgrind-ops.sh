#!/usr/bin/env bash
# Repeatable per-operation cost of the library: callgrind instructions counted inside FUNC only
# (so a store's background work, such as sqlite's, is left out), divided by its calls.
# Usage (after `cargo build --release` here): bench/larder-bench/callgrind-ops.sh IMP OP [N] [FUNC]
#   IMP: memory | memory->fs->sqlite | memory->fs | ... (tiered stacks, 256 keys, after a fill)
#   OP: get | get-async | put;  N: operations (default 5000);  FUNC default '*StoreExt::get_bytes*'
#   (get-async reads through `Store::get` itself, as a server does, and is counted inside the
#   bench's `get_via_store`; put is counted inside `StoreExt::put_bytes`, SHA-256 included:
#   subtract a run's per-call figure at another N to see the cost beyond the hash)
# The calls are N + 256 (the fill reads every key once). Tiered ratio: memory's / the stack's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
imp=$1; op=$2; n=${3:-5000}; fn=${4:-'*StoreExt::get_bytes*'}
[ "$op" = get-async ] && fn=${4:-'*larder_bench::get_via_store*'}
[ "$op" = put ] && fn=${4:-'*StoreExt::put_bytes*'}
d=$(mktemp -d); trap 'rm -rf "$d"' EXIT
valgrind --tool=callgrind --toggle-collect="$fn" --callgrind-out-file="$d/cg" \
  "$here/target/release/larder-bench" ops "$imp" "$op" "$n" >/dev/null 2>"$d/log"
ir=$(grep -m1 '^summary:\|^totals:' "$d/cg" | awk '{print $2}')
echo "$imp $op: $ir instructions, $(( ir / (n + 256) )) per call"
