#!/usr/bin/env bash
# Long run of the libFuzzer targets: `npm run fuzz:native -- [libFuzzer flags]`, e.g. -max_total_time=600 or
# -runs=10000000; FUZZ_TARGET=cmsg, copy or uring runs one of them (default: all, one after the other).
# Builds into native/fuzz/build, fuzzes a working copy of the target's corpus (native/fuzz/corpus for cmsg,
# native/fuzz/corpus-T for the others; new inputs stay in native/fuzz/build/corpus[-T]), writes crashes to
# fuzz-findings/. Defaults: -seed=1 -max_total_time=60.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
"$here/build.sh" "$here/build"
mkdir -p "$root/fuzz-findings"
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(-seed=1 -max_total_time=60)
for t in ${FUZZ_TARGET:-cmsg copy uring}; do
  corpus=corpus
  [ "$t" != cmsg ] && corpus="corpus-$t"
  mkdir -p "$here/build/$corpus"
  cp -n "$here/$corpus"/* "$here/build/$corpus/"
  "$here/build/${t}_fuzz" -artifact_prefix="$root/fuzz-findings/$t-" -print_final_stats=1 "${args[@]}" "$here/build/$corpus"
done
