/*
 * The plain driver of a fuzz target: main() replays each file named on the command line through
 * LLVMFuzzerTestOneInput (build.sh builds it with -D<TARGET>_DRIVER, for valgrind). Include it last, after
 * defining FUZZ_NAME, the target's name in the summary line the tests look for.
 */
#include <stdint.h>
#include <stdio.h>

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    FILE *f = fopen(argv[i], "rb");
    if (!f) {
      perror(argv[i]);
      return 2;
    }
    static uint8_t data[1 << 16];
    size_t n = fread(data, 1, sizeof(data), f);
    fclose(f);
    LLVMFuzzerTestOneInput(data, n);
  }
  printf(FUZZ_NAME " driver: %d inputs\n", argc - 1);
  return 0;
}
