/* io_uring request building (see uring_prep.h). Pure: no syscall, no allocation. */
#include "uring_prep.h"

#include <linux/falloc.h>
#include <string.h>

/* d is an integer in [0, max]; NaN, infinities and fractions fail (the comparisons come before any cast). */
static int is_uint(double d, double max, uint64_t *out) {
  if (!(d >= 0 && d <= max)) return 0;
  uint64_t v = (uint64_t)d;
  if ((double)v != d) return 0;
  *out = v;
  return 1;
}

int uring_prep_op(const double *op, uring_view_fn view, void *ctx, uint32_t nviews, struct io_uring_sqe *sqe,
                  struct iovec *iov, size_t iov_room, size_t *iov_used, const char **why) {
  uint64_t kind, tag, fd, off, a, b;
  *iov_used = 0;
  if (!is_uint(op[0], URING_OP_FALLOCATE, &kind)) return *why = "op", URING_PREP_BAD;
  if (!is_uint(op[1], 4294967295.0, &tag)) return *why = "tag", URING_PREP_BAD;
  if (!is_uint(op[2], 2147483647.0, &fd)) return *why = "fd", URING_PREP_BAD;
  if (!is_uint(op[3], URING_MAX_OFFSET, &off)) return *why = "offset", URING_PREP_BAD;
  if (!is_uint(op[4], URING_MAX_OFFSET, &a)) return *why = "view index or length", URING_PREP_BAD;
  if (!is_uint(op[5], URING_MAX_OFFSET, &b)) return *why = "view count or mode", URING_PREP_BAD;
  memset(sqe, 0, sizeof(*sqe));
  sqe->fd = (int32_t)fd;
  sqe->user_data = tag;
  switch (kind) {
    case URING_OP_READV:
    case URING_OP_WRITEV: {
      if (b < 1 || b > URING_IOV_MAX) return *why = "view count", URING_PREP_BAD;
      if (a > nviews || b > nviews - a) return *why = "views past the table", URING_PREP_BAD;
      if (b > iov_room) return URING_PREP_FULL;
      uint64_t total = 0;
      for (uint32_t i = 0; i < (uint32_t)b; i++) {
        void *data;
        size_t len;
        if (view(ctx, (uint32_t)a + i, &data, &len)) return *why = "view is not a Uint8Array", URING_PREP_BAD;
        total += len; /* each view is below 2^53 bytes and there are at most 1024 of them: no overflow */
        iov[i].iov_base = len ? data : NULL;
        iov[i].iov_len = len;
      }
      if (total > (uint64_t)URING_MAX_OFFSET - off) return *why = "offset + length", URING_PREP_BAD;
      sqe->opcode = kind == URING_OP_READV ? IORING_OP_READV : IORING_OP_WRITEV;
      sqe->off = off;
      sqe->addr = (uint64_t)(uintptr_t)iov;
      sqe->len = (uint32_t)b;
      *iov_used = (size_t)b;
      return URING_PREP_OK;
    }
    case URING_OP_FDATASYNC:
      if (off || a || b) return *why = "fdatasync takes no range", URING_PREP_BAD;
      sqe->opcode = IORING_OP_FSYNC;
      sqe->fsync_flags = IORING_FSYNC_DATASYNC;
      return URING_PREP_OK;
    default: /* URING_OP_FALLOCATE */
      if (a < 1 || a > (uint64_t)URING_MAX_OFFSET - off) return *why = "fallocate range", URING_PREP_BAD;
      if (b != (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) && b != FALLOC_FL_ZERO_RANGE &&
          b != (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE))
        return *why = "fallocate mode", URING_PREP_BAD;
      sqe->opcode = IORING_OP_FALLOCATE;
      sqe->off = off;
      sqe->addr = a;          /* the length */
      sqe->len = (uint32_t)b; /* the mode */
      return URING_PREP_OK;
  }
}
