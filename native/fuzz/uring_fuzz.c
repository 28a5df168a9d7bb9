/*
 * libFuzzer target for uring_prep_op (native/uring_prep.c), the check of every request record before it becomes an
 * SQE. The input is a view table (count and lengths) and a run of request records, each field either a raw double
 * (NaN, infinities, fractions, anything) or a value from a table of boundaries. The iovec room is a heap block of
 * exactly that many entries and every view is its own heap block, so AddressSanitizer sees any write past them.
 * Contract, checked against an independent model of the rules in uring_prep.h: a record is accepted exactly when
 * every field is in range; an accepted readv/writev has one iovec per view, each the view's own pointer and length,
 * in order; a rejected record reports none used; a record that does not fit the room is FULL and writes none.
 * Built by native/fuzz/build.sh; with -DURING_DRIVER the same file is the valgrind driver (main() replays files).
 */
#include <linux/falloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../uring_prep.h"

#define MAX_VIEWS 40

typedef struct {
  uint32_t n;
  uint8_t *data[MAX_VIEWS];
  size_t len[MAX_VIEWS];
  int not_bytes[MAX_VIEWS];
} views_t;

static int view_at(void *ctx, uint32_t index, void **data, size_t *len) {
  views_t *v = ctx;
  if (index >= v->n) {
    fprintf(stderr, "uring_prep_op asked for view %u of %u\n", index, v->n);
    abort();
  }
  if (v->not_bytes[index]) return -1;
  *data = v->data[index];
  *len = v->len[index];
  return 0;
}

static const double boundaries[] = {
  0, 1, 2, 3, 0x10, 0x11, 0x12, 1023, 1024, 1025, 4294967295.0, 4294967296.0, 2147483647.0, 2147483648.0,
  9007199254740992.0, 9007199254740991.0, 9007199254740994.0, -1, -0.0, 0.5, INFINITY, -INFINITY, NAN, 1e300, 39, 40,
};

typedef struct {
  const uint8_t *p;
  size_t left;
} input_t;

static uint8_t take_byte(input_t *in) {
  if (!in->left) return 0;
  in->left--;
  return *in->p++;
}

static double take_field(input_t *in) {
  uint8_t t = take_byte(in);
  switch (t % 4) {
    case 0: {
      double d = 0;
      size_t n = in->left < sizeof(d) ? in->left : sizeof(d);
      memcpy(&d, in->p, n);
      in->p += n;
      in->left -= n;
      return d;
    }
    case 1: return take_byte(in);
    case 2: return take_byte(in) * 4096.0;
    default: return boundaries[take_byte(in) % (sizeof(boundaries) / sizeof(boundaries[0]))];
  }
}

static int is_int_in(double d, double max) {
  return d >= 0 && d <= max && floor(d) == d;
}

/* The rules of uring_prep.h, written out independently. Returns URING_PREP_OK / BAD / FULL. */
static int model(const double *op, const views_t *v, size_t room) {
  double lim = URING_MAX_OFFSET;
  if (!is_int_in(op[0], 3) || !is_int_in(op[1], 4294967295.0) || !is_int_in(op[2], 2147483647.0) || !is_int_in(op[3], lim) ||
      !is_int_in(op[4], lim) || !is_int_in(op[5], lim))
    return URING_PREP_BAD;
  if (op[0] <= 1) {
    if (op[5] < 1 || op[5] > URING_IOV_MAX || op[4] + op[5] > v->n) return URING_PREP_BAD;
    if (op[5] > room) return URING_PREP_FULL;
    uint64_t total = 0;
    for (uint32_t i = (uint32_t)op[4]; i < (uint32_t)(op[4] + op[5]); i++) {
      if (v->not_bytes[i]) return URING_PREP_BAD;
      total += v->len[i];
    }
    return (uint64_t)op[3] + total > (uint64_t)lim ? URING_PREP_BAD : URING_PREP_OK;
  }
  if (op[0] == 2) return op[3] == 0 && op[4] == 0 && op[5] == 0 ? URING_PREP_OK : URING_PREP_BAD;
  if (op[4] < 1 || (uint64_t)op[3] + (uint64_t)op[4] > (uint64_t)lim) return URING_PREP_BAD;
  double m = op[5];
  return m == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) || m == FALLOC_FL_ZERO_RANGE || m == (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)
           ? URING_PREP_OK
           : URING_PREP_BAD;
}

static void fail(const char *what, int rc, int want) {
  fprintf(stderr, "uring_prep_op: %s (returned %d, the model says %d)\n", what, rc, want);
  abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  input_t in = {data, size};
  views_t v;
  memset(&v, 0, sizeof(v));
  v.n = take_byte(&in) % (MAX_VIEWS + 1);
  for (uint32_t i = 0; i < v.n; i++) {
    uint8_t b = take_byte(&in);
    v.not_bytes[i] = b == 255;
    v.len[i] = b % 64;
    v.data[i] = malloc(v.len[i] ? v.len[i] : 1);
    if (!v.data[i]) abort();
  }
  size_t room = take_byte(&in) % (MAX_VIEWS + 2);
  struct iovec *iov = malloc((room ? room : 1) * sizeof(*iov));
  if (!iov) abort();
  while (in.left > 0) {
    double op[URING_OP_STRIDE];
    for (int i = 0; i < URING_OP_STRIDE; i++) op[i] = take_field(&in);
    struct io_uring_sqe sqe;
    memset(&sqe, 0xa5, sizeof(sqe));
    for (size_t i = 0; i < room; i++) iov[i].iov_base = NULL, iov[i].iov_len = 0x5a5a;
    size_t used = 99;
    const char *why = NULL;
    int rc = uring_prep_op(op, view_at, &v, v.n, &sqe, iov, room, &used, &why);
    int want = model(op, &v, room);
    if (rc != want) fail("accepts what the rules refuse, or the reverse", rc, want);
    if (rc == URING_PREP_BAD && why == NULL) fail("a refusal without a reason", rc, want);
    if (rc != URING_PREP_OK) {
      if (used != 0) fail("a refused record reports iovecs used", rc, want);
      if (rc == URING_PREP_FULL)
        for (size_t i = 0; i < room; i++)
          if (iov[i].iov_len != 0x5a5a) fail("a record that does not fit wrote an iovec", rc, want);
      continue;
    }
    if (sqe.user_data != (uint64_t)op[1] || sqe.fd != (int32_t)op[2]) fail("tag or fd not carried over", rc, want);
    if (op[0] <= 1) {
      uint32_t first = (uint32_t)op[4], count = (uint32_t)op[5];
      if (used != count || sqe.len != count || sqe.addr != (uint64_t)(uintptr_t)iov || sqe.off != (uint64_t)op[3])
        fail("readv/writev SQE does not describe the iovecs", rc, want);
      if (sqe.opcode != (op[0] == 0 ? IORING_OP_READV : IORING_OP_WRITEV)) fail("wrong opcode", rc, want);
      for (uint32_t i = 0; i < count; i++)
        if (iov[i].iov_len != v.len[first + i] || (v.len[first + i] && iov[i].iov_base != v.data[first + i]))
          fail("an iovec is not its view", rc, want);
    } else if (used != 0) fail("fdatasync/fallocate used iovecs", rc, want);
  }
  free(iov);
  for (uint32_t i = 0; i < v.n; i++) free(v.data[i]);
  return 0;
}

#ifdef URING_DRIVER
#define FUZZ_NAME "uring"
#include "replay_main.h"
#endif
