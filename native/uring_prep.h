/* io_uring request building, apart from the syscalls so it can be fuzzed (native/fuzz/uring_fuzz.c). */
#ifndef VHOST_NATIVE_URING_PREP_H
#define VHOST_NATIVE_URING_PREP_H

#include <linux/io_uring.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* One request is URING_OP_STRIDE doubles in the caller's Float64Array (the layout of src/native/types.ts):
 *   [0] op  [1] tag (user_data)  [2] fd  [3] file offset  [4] first view | fallocate length  [5] view count | mode */
#define URING_OP_STRIDE 6
#define URING_OP_READV 0
#define URING_OP_WRITEV 1
#define URING_OP_FDATASYNC 2
#define URING_OP_FALLOCATE 3
#define URING_IOV_MAX 1024 /* Linux IOV_MAX */
#define URING_MAX_OFFSET 9007199254740992.0 /* 2^53: every file offset and length is an exact double */

#define URING_PREP_OK 0
#define URING_PREP_BAD (-1)  /* *why says which field */
#define URING_PREP_FULL 1    /* not enough iovec room left: submit what is built, then retry this op */

/* Resolves view `index` to its memory; returns 0, or -1 when it is not a byte view. */
typedef int (*uring_view_fn)(void *ctx, uint32_t index, void **data, size_t *len);

/*
 * Check one request record and build its SQE (zeroed first) and iovecs. Every field is range-checked here, before
 * anything reaches the kernel: op known, tag < 2^32, 0 <= fd <= INT32_MAX, offsets and lengths integers in
 * [0, 2^53] whose sum stays in range, first + count <= nviews, 1 <= count <= URING_IOV_MAX, fallocate mode one of
 * PUNCH_HOLE|KEEP_SIZE, ZERO_RANGE, ZERO_RANGE|KEEP_SIZE. The iovecs go to iov[0..count) (iov_room entries free);
 * *iov_used is set to count. Views are resolved through view(); their lengths come from the view, never the record.
 */
int uring_prep_op(const double *op, uring_view_fn view, void *ctx, uint32_t nviews, struct io_uring_sqe *sqe,
                  struct iovec *iov, size_t iov_room, size_t *iov_used, const char **why);

#endif
