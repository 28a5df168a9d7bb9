#!/usr/bin/env bash
# Build the cmsg fuzzers (and the uring ones, below) into $1 (default native/fuzz/build):
#   cmsg_fuzz        libFuzzer + AddressSanitizer + UndefinedBehaviorSanitizer (the fuzzer)
#   cmsg_fuzz_plain  libFuzzer without sanitizers (runs under valgrind)
#   cmsg_driver      plain main() replaying files (gcc, runs under valgrind)
# Needs clang with libFuzzer (Debian: clang, libclang-rt-14-dev; scripts/install-peers.sh installs them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/build}"
mkdir -p "$out"
warn=(-Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE -gdwarf-4) # valgrind 3.19 cannot read DWARF 5
clang "${warn[@]}" -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  "$here/../cmsg.c" "$here/cmsg_fuzz.c" -o "$out/cmsg_fuzz"
clang "${warn[@]}" -O1 -fsanitize=fuzzer "$here/../cmsg.c" "$here/cmsg_fuzz.c" -o "$out/cmsg_fuzz_plain"
cc "${warn[@]}" -O0 -DCMSG_DRIVER "$here/../cmsg.c" "$here/cmsg_fuzz.c" -o "$out/cmsg_driver"
# uring_prep.c (io_uring request checks): the same three builds, -DURING_DRIVER for the valgrind driver.
clang "${warn[@]}" -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  "$here/../uring_prep.c" "$here/uring_fuzz.c" -lm -o "$out/uring_fuzz"
clang "${warn[@]}" -O1 -fsanitize=fuzzer "$here/../uring_prep.c" "$here/uring_fuzz.c" -lm -o "$out/uring_fuzz_plain"
cc "${warn[@]}" -O0 -DURING_DRIVER "$here/../uring_prep.c" "$here/uring_fuzz.c" -lm -o "$out/uring_driver"
