/*
 * libFuzzer target for cmsg_collect_fds (native/cmsg.c): the input is the control buffer recvmsg(2) filled in,
 * copied into a heap block of exactly that size so AddressSanitizer sees any read past it.
 * Contract: at most `max` fds stored (max = first byte % 9), every SCM_RIGHTS fd wholly inside the buffer either
 * stored or closed (none leaked, none invented), no read outside the buffer, no undefined behaviour.
 * Built by native/fuzz/build.sh; the same file is the valgrind driver when built with -DCMSG_DRIVER (main() replays
 * the files named on the command line).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cmsg.h"

static int closed;

static void count_close(int fd) {
  (void)fd;
  closed++;
}

/* Independent count of the fds the kernel's layout puts in buf (what a correct parser must account for). */
static int expected_fds(const unsigned char *buf, size_t len) {
  int total = 0;
  size_t off = 0;
  while (off + sizeof(struct cmsghdr) <= len) {
    struct cmsghdr h;
    memcpy(&h, buf + off, sizeof(h));
    if (h.cmsg_len < CMSG_LEN(0) || h.cmsg_len > len - off) break;
    if (h.cmsg_level == SOL_SOCKET && h.cmsg_type == SCM_RIGHTS) total += (int)((h.cmsg_len - CMSG_LEN(0)) / sizeof(int));
    off += CMSG_ALIGN(h.cmsg_len);
  }
  return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int max = data[0] % 9;
  size_t len = size - 1;
  /* malloc keeps the cmsghdr alignment recvmsg's buffer has; exact size so overreads are caught. */
  unsigned char *buf = malloc(len ? len : 1);
  if (!buf) abort();
  memcpy(buf, data + 1, len);
  struct msghdr msg;
  memset(&msg, 0, sizeof(msg));
  msg.msg_control = len ? buf : NULL;
  msg.msg_controllen = len;
  int out[8];
  closed = 0;
  int n = cmsg_collect_fds(&msg, out, max, count_close);
  int want = expected_fds(buf, len);
  if (n < 0 || n > max) {
    fprintf(stderr, "cmsg_collect_fds stored %d fds, max %d\n", n, max);
    abort();
  }
  if (n + closed != want) {
    fprintf(stderr, "cmsg_collect_fds accounted for %d stored + %d closed fds, the buffer holds %d\n", n, closed, want);
    abort();
  }
  free(buf);
  return 0;
}

#ifdef CMSG_DRIVER
#define FUZZ_NAME "cmsg"
#include "replay_main.h"
#endif
