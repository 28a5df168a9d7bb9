/*
 * io_uring for disk I/O: one ring per engine (src/blk/uring-engine.ts), SQPOLL off, raw syscalls (no liburing).
 * uringSubmit builds a burst of SQEs from a request table (uring_prep.c checks every field) and submits them with
 * one io_uring_enter; uringReap copies completions (tag, result) into the caller's Float64Array. All policy (tags,
 * short transfers, errors, retries) is in TypeScript.
 *
 * Wake-ups. Every completion signals the ring's eventfd (IORING_REGISTER_EVENTFD). IORING_REGISTER_EVENTFD_ASYNC
 * would skip the signal for completions posted inline, but it also skips completions posted from task work in this
 * thread (how io-wq and async buffered reads complete on current kernels), which then sit in the CQ unseen: a hang.
 * Instead uringReap can drain the eventfd before it reads the CQ: the signals of every completion it is about to
 * see are consumed (the kernel signals after it publishes the CQE), so the event loop is not woken for completions
 * already reaped right after a submit, and a completion published after the drain signals again.
 *
 * Memory. The kernel reads the iovecs during io_uring_enter (IORING_FEAT_SUBMIT_STABLE is required at setup), so
 * one scratch array per ring is reused by every burst; the buffers themselves must stay alive until their
 * completion is reaped, which the TypeScript side guarantees by holding the views in the request slot. The CQ is
 * never overrun: a burst is cut to the free CQ entries (cq_entries - in flight), so no completion is ever dropped.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common.h"
#include "uring_prep.h"

#define URING_MAX_ENTRIES 4096
#define URING_IOV_SCRATCH 4096 /* >= URING_IOV_MAX, so one request always fits an empty scratch */

typedef struct {
  int fd;
  int efd; /* registered eventfd, or -1 */
  int closed;
  unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
  unsigned *cq_head, *cq_tail, *cq_mask;
  struct io_uring_cqe *cqes;
  struct io_uring_sqe *sqes;
  unsigned sq_entries, cq_entries;
  unsigned inflight; /* submitted, not yet reaped */
  void *sq_ring, *cq_ring;
  size_t sq_ring_len, cq_ring_len, sqes_len;
  struct iovec iov[URING_IOV_SCRATCH];
} ring_t;

static const napi_type_tag ring_tag = {0x76686f737464752dULL, 0x72696e67e6a1c9b3ULL};

static int sys_setup(unsigned entries, struct io_uring_params *p) {
  return (int)syscall(__NR_io_uring_setup, entries, p);
}
static int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags) {
  return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
}
static int sys_register(int fd, unsigned op, void *arg, unsigned n) {
  return (int)syscall(__NR_io_uring_register, fd, op, arg, n);
}

static void ring_unmap(ring_t *r) {
  if (r->sqes && r->sqes != MAP_FAILED) munmap(r->sqes, r->sqes_len);
  if (r->cq_ring && r->cq_ring != MAP_FAILED && r->cq_ring != r->sq_ring) munmap(r->cq_ring, r->cq_ring_len);
  if (r->sq_ring && r->sq_ring != MAP_FAILED) munmap(r->sq_ring, r->sq_ring_len);
  r->sqes = NULL;
  r->cq_ring = r->sq_ring = NULL;
}

/* Close the ring. Requests still in flight would write into buffers their owner may free: wait for them first. */
static void ring_close(ring_t *r) {
  if (r->closed) return;
  while (r->inflight > 0) {
    int n = sys_enter(r->fd, 0, r->inflight, IORING_ENTER_GETEVENTS);
    if (n < 0 && errno != EINTR) break;
    unsigned head = *r->cq_head, tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
    r->inflight -= tail - head < r->inflight ? tail - head : r->inflight;
    __atomic_store_n(r->cq_head, tail, __ATOMIC_RELEASE);
  }
  ring_unmap(r);
  close(r->fd);
  r->closed = 1;
}

static void ring_finalize(napi_env env, void *data, void *hint) {
  UNUSED(env);
  UNUSED(hint);
  ring_close(data);
  free(data);
}

/* Map the rings; returns 0 or an errno. */
static int ring_map(ring_t *r, const struct io_uring_params *p) {
  r->sq_ring_len = p->sq_off.array + p->sq_entries * sizeof(unsigned);
  r->cq_ring_len = p->cq_off.cqes + p->cq_entries * sizeof(struct io_uring_cqe);
  if (p->features & IORING_FEAT_SINGLE_MMAP) {
    if (r->cq_ring_len > r->sq_ring_len) r->sq_ring_len = r->cq_ring_len;
    r->cq_ring_len = r->sq_ring_len;
  }
  r->sq_ring = mmap(NULL, r->sq_ring_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
  if (r->sq_ring == MAP_FAILED) return errno;
  if (p->features & IORING_FEAT_SINGLE_MMAP) r->cq_ring = r->sq_ring;
  else {
    r->cq_ring = mmap(NULL, r->cq_ring_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
    if (r->cq_ring == MAP_FAILED) return errno;
  }
  r->sqes_len = p->sq_entries * sizeof(struct io_uring_sqe);
  r->sqes = mmap(NULL, r->sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
  if (r->sqes == MAP_FAILED) return errno;
  char *sq = r->sq_ring, *cq = r->cq_ring;
  r->sq_head = (unsigned *)(sq + p->sq_off.head);
  r->sq_tail = (unsigned *)(sq + p->sq_off.tail);
  r->sq_mask = (unsigned *)(sq + p->sq_off.ring_mask);
  r->sq_array = (unsigned *)(sq + p->sq_off.array);
  r->cq_head = (unsigned *)(cq + p->cq_off.head);
  r->cq_tail = (unsigned *)(cq + p->cq_off.tail);
  r->cq_mask = (unsigned *)(cq + p->cq_off.ring_mask);
  r->cqes = (struct io_uring_cqe *)(cq + p->cq_off.cqes);
  r->sq_entries = p->sq_entries;
  r->cq_entries = p->cq_entries;
  return 0;
}

static int this_ring(napi_env env, napi_value v, ring_t **out) {
  bool ours = false;
  void *data = NULL;
  if (napi_check_object_type_tag(env, v, &ring_tag, &ours) != napi_ok || !ours || napi_unwrap(env, v, &data) != napi_ok || !data) {
    throw_type(env, "ring must come from uringSetup()");
    return -1;
  }
  *out = data;
  if ((*out)->closed) {
    napi_throw_error(env, "ERR_URING_CLOSED", "the io_uring is closed");
    return -1;
  }
  return 0;
}

/* uringSetup(entries, eventfd): a ring of `entries` SQEs (2x CQEs); completions signal eventfd (-1: none; it must be
 * non-blocking, as eventfd() in event.c makes it). */
napi_value uring_setup(napi_env env, napi_callback_info info) {
  napi_value argv[2], obj, v;
  uint64_t entries;
  int32_t efd;
  if (get_args(env, info, 2, argv, NULL) || arg_uint(env, argv[0], "entries", URING_MAX_ENTRIES, &entries) ||
      arg_i32(env, argv[1], "eventfd", &efd))
    return NULL;
  if (entries < 1) return throw_range(env, "entries must be at least 1");
  struct io_uring_params p;
  memset(&p, 0, sizeof(p));
  p.flags = IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL;
  int fd = sys_setup((unsigned)entries, &p);
  if (fd < 0 && errno == EINVAL) { /* SUBMIT_ALL is 5.18; without it a failed SQE ends the burst, handled below */
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_CLAMP;
    fd = sys_setup((unsigned)entries, &p);
  }
  if (fd < 0) return throw_errno(env, "io_uring_setup", errno);
  int need = IORING_FEAT_SUBMIT_STABLE | IORING_FEAT_NODROP;
  if ((p.features & need) != (unsigned)need) {
    close(fd);
    return throw_code(env, "io_uring_setup", "ENOTSUP", "kernel lacks IORING_FEAT_SUBMIT_STABLE or IORING_FEAT_NODROP");
  }
  ring_t *r = calloc(1, sizeof(*r));
  if (!r) {
    close(fd);
    return throw_errno(env, "malloc", ENOMEM);
  }
  r->fd = fd;
  int err = ring_map(r, &p);
  if (!err && efd >= 0 && sys_register(fd, IORING_REGISTER_EVENTFD, &efd, 1) < 0) err = errno;
  r->efd = efd;
  if (err) {
    ring_close(r);
    free(r);
    return throw_errno(env, err == EINVAL || err == EBADF ? "io_uring_register" : "mmap", err);
  }
  if (napi_create_object(env, &obj) != napi_ok || napi_type_tag_object(env, obj, &ring_tag) != napi_ok ||
      napi_wrap(env, obj, r, ring_finalize, NULL, NULL) != napi_ok) {
    ring_close(r);
    free(r);
    throw_napi_failure(env, "uringSetup");
    return NULL;
  }
  if (napi_create_uint32(env, r->sq_entries, &v) != napi_ok || napi_set_named_property(env, obj, "sqEntries", v) != napi_ok ||
      napi_create_uint32(env, r->cq_entries, &v) != napi_ok || napi_set_named_property(env, obj, "cqEntries", v) != napi_ok) {
    throw_napi_failure(env, "uringSetup");
    return NULL;
  }
  return obj;
}

typedef struct {
  napi_env env;
  napi_value views;
} views_ctx_t;

static int resolve_view(void *opaque, uint32_t index, void **data, size_t *len) {
  views_ctx_t *c = opaque;
  napi_value v, ab;
  bool is_ta = false;
  napi_typedarray_type type;
  size_t off;
  if (napi_get_element(c->env, c->views, index, &v) != napi_ok || napi_is_typedarray(c->env, v, &is_ta) != napi_ok || !is_ta)
    return -1;
  if (napi_get_typedarray_info(c->env, v, &type, len, data, &ab, &off) != napi_ok || type != napi_uint8_array) return -1;
  return 0;
}

/* uringSubmit(ring, ops, count, views): submit requests ops[0..count) (URING_OP_STRIDE doubles each) in one
 * io_uring_enter; returns how many the kernel took (fewer when the SQ, the iovec scratch or the free CQ entries run
 * out: the caller submits the rest later). A bad request throws RangeError and submits nothing. */
napi_value uring_submit(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  ring_t *r;
  uint64_t count;
  bool is_arr = false;
  uint32_t nviews = 0;
  napi_typedarray_type type;
  size_t nops;
  void *opsdata;
  napi_value ab;
  size_t aboff;
  if (get_args(env, info, 4, argv, NULL) || this_ring(env, argv[0], &r)) return NULL;
  if (napi_get_typedarray_info(env, argv[1], &type, &nops, &opsdata, &ab, &aboff) != napi_ok || type != napi_float64_array)
    return throw_type(env, "ops must be a Float64Array");
  if (arg_uint(env, argv[2], "count", (double)(nops / URING_OP_STRIDE), &count)) return NULL;
  if (napi_is_array(env, argv[3], &is_arr) != napi_ok || !is_arr || napi_get_array_length(env, argv[3], &nviews) != napi_ok)
    return throw_type(env, "views must be an Array of Uint8Array");
  const double *ops = opsdata;
  views_ctx_t ctx = {env, argv[3]};
  unsigned tail = *r->sq_tail, head = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
  unsigned room = r->sq_entries - (tail - head);
  unsigned cq_room = r->cq_entries - r->inflight;
  if (room > cq_room) room = cq_room;
  unsigned n = 0;
  size_t iov_off = 0;
  while (n < count && n < room) {
    unsigned idx = (tail + n) & *r->sq_mask;
    size_t used;
    const char *why = "";
    int rc = uring_prep_op(ops + (size_t)n * URING_OP_STRIDE, resolve_view, &ctx, nviews, &r->sqes[idx], r->iov + iov_off,
                           URING_IOV_SCRATCH - iov_off, &used, &why);
    if (rc == URING_PREP_FULL) break;
    if (rc != URING_PREP_OK) {
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) return NULL;
      char msg[96];
      snprintf(msg, sizeof(msg), "uringSubmit: request %u has a bad %s", n, why);
      return throw_range(env, msg);
    }
    r->sq_array[idx] = idx;
    iov_off += used;
    n++;
  }
  if (n == 0) return make_number(env, 0);
  __atomic_store_n(r->sq_tail, tail + n, __ATOMIC_RELEASE);
  unsigned done = 0;
  int err = 0;
  while (done < n) {
    int k = sys_enter(r->fd, n - done, 0, 0);
    if (k < 0) {
      if (errno == EINTR) continue;
      err = errno;
      break;
    }
    if (k == 0) break;
    done += (unsigned)k;
  }
  if (done < n) {
    /* SQEs the kernel did not take point into the iovec scratch the next burst reuses: take them back. The kernel
     * reads the tail only inside io_uring_enter and SQPOLL is off, so rewinding it is safe. */
    unsigned kh = __atomic_load_n(r->sq_head, __ATOMIC_ACQUIRE);
    __atomic_store_n(r->sq_tail, kh, __ATOMIC_RELEASE);
    done = kh - tail;
  }
  r->inflight += done;
  if (done == 0 && err && !((err == EAGAIN || err == EBUSY) && r->inflight > 0)) return throw_errno(env, "io_uring_enter", err);
  return make_number(env, done);
}

/* uringReap(ring, out, max, drain): copy up to max completions as (tag, result) pairs into out; returns how many.
 * drain: first read the eventfd (non-blocking), consuming the signals of the completions this call sees. */
napi_value uring_reap(napi_env env, napi_callback_info info) {
  napi_value argv[4], ab;
  ring_t *r;
  napi_typedarray_type type;
  size_t len, aboff;
  void *data;
  uint64_t max;
  int drain;
  if (get_args(env, info, 4, argv, NULL) || this_ring(env, argv[0], &r) || arg_bool(env, argv[3], "drain", &drain)) return NULL;
  if (napi_get_typedarray_info(env, argv[1], &type, &len, &data, &ab, &aboff) != napi_ok || type != napi_float64_array)
    return throw_type(env, "out must be a Float64Array");
  if (arg_uint(env, argv[2], "max", (double)(len / 2), &max)) return NULL;
  double *out = data;
  if (drain && r->efd >= 0) {
    uint64_t v;
    while (read(r->efd, &v, sizeof(v)) < 0 && errno == EINTR) {
    }
  }
  unsigned head = *r->cq_head, tail = __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE);
  unsigned n = 0;
  while (head != tail && n < max) {
    const struct io_uring_cqe *c = &r->cqes[head & *r->cq_mask];
    out[2 * n] = (double)c->user_data;
    out[2 * n + 1] = c->res;
    head++;
    n++;
  }
  __atomic_store_n(r->cq_head, head, __ATOMIC_RELEASE);
  r->inflight -= n < r->inflight ? n : r->inflight;
  return make_number(env, n);
}

/* uringClose(ring): waits for requests in flight, then unmaps and closes. Idempotent. */
napi_value uring_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  bool ours = false;
  void *data = NULL;
  if (get_args(env, info, 1, argv, NULL)) return NULL;
  if (napi_check_object_type_tag(env, argv[0], &ring_tag, &ours) != napi_ok || !ours || napi_unwrap(env, argv[0], &data) != napi_ok || !data)
    return throw_type(env, "ring must come from uringSetup()");
  ring_close(data);
  return make_undefined(env);
}
