#!/usr/bin/env bash
# Long run of the libFuzzer target: `npm run fuzz:native -- [libFuzzer flags]`, e.g. -max_total_time=600 or
# -runs=10000000. Builds into native/fuzz/build, fuzzes a working copy of native/fuzz/corpus (new inputs stay in
# native/fuzz/build/corpus), writes crashes to fuzz-findings/. Defaults: -seed=1 -max_total_time=60.
# `npm run fuzz:native -- uring [flags]` fuzzes the io_uring request checks (uring_prep.c, corpus-uring/) instead.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
"$here/build.sh" "$here/build"
target=cmsg corpus=corpus
if [ "${1:-}" = uring ]; then target=uring corpus=corpus-uring; shift; fi
mkdir -p "$here/build/$corpus" "$root/fuzz-findings"
cp -n "$here/$corpus"/* "$here/build/$corpus/"
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(-seed=1 -max_total_time=60)
exec "$here/build/${target}_fuzz" -artifact_prefix="$root/fuzz-findings/$target-" -print_final_stats=1 "${args[@]}" "$here/build/$corpus"
