#!/usr/bin/env bash
# Build the native fuzzers into $1 (default native/fuzz/build), for each target T (cmsg: native/cmsg.c, copy:
# native/copy.c, uring: native/uring_prep.c, the io_uring request checks):
#   T_fuzz        libFuzzer + AddressSanitizer + UndefinedBehaviorSanitizer (the fuzzer)
#   T_fuzz_plain  libFuzzer without sanitizers (runs under valgrind)
#   T_driver      plain main() replaying files (gcc, -DT_DRIVER, runs under valgrind)
# Needs clang with libFuzzer (Debian: clang, libclang-rt-14-dev; scripts/install-peers.sh installs them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/build}"
mkdir -p "$out"
warn=(-Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE -gdwarf-4) # valgrind 3.19 cannot read DWARF 5
for t in cmsg copy uring; do
  T="$(echo "$t" | tr a-z A-Z)"
  src="$here/../$t.c"
  [ "$t" = uring ] && src="$here/../uring_prep.c"
  clang "${warn[@]}" -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    "$src" "$here/${t}_fuzz.c" -lm -o "$out/${t}_fuzz"
  clang "${warn[@]}" -O1 -fsanitize=fuzzer "$src" "$here/${t}_fuzz.c" -lm -o "$out/${t}_fuzz_plain"
  cc "${warn[@]}" -O0 "-D${T}_DRIVER" "$src" "$here/${t}_fuzz.c" -lm -o "$out/${t}_driver"
done
