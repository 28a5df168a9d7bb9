/* eventfd create/read/write, close() and a full fence. */
#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common.h"

napi_value event_eventfd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint64_t initval;
  if (get_args(env, info, 1, argv, NULL) || arg_uint(env, argv[0], "initval", 4294967295.0, &initval)) return NULL;
  int fd = eventfd((unsigned int)initval, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return throw_errno(env, "eventfd", errno);
  return make_number(env, fd);
}

/* Whether fd is ready for `events` now. The front-end shares the open file description of every eventfd it sends
 * and may clear O_NONBLOCK on it; asking first keeps a read of an empty (or a write to a full) eventfd from
 * blocking the event loop (a race with a front-end that fills or drains its own eventfd in between remains; see
 * docs/security.md). */
static int ready_now(int fd, short events) {
  struct pollfd p = {.fd = fd, .events = events, .revents = 0};
  int r;
  do r = poll(&p, 1, 0);
  while (r < 0 && errno == EINTR);
  /* POLLNVAL/POLLERR: let the syscall itself report the error. */
  return r > 0 && (p.revents & (events | POLLNVAL | POLLERR));
}

napi_value event_read(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  uint64_t value;
  ssize_t n;
  if (get_args(env, info, 1, argv, NULL) || arg_i32(env, argv[0], "fd", &fd)) return NULL;
  if (!ready_now(fd, POLLIN)) return make_number(env, -1);
  do n = read(fd, &value, sizeof(value));
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return make_number(env, -1);
  if (n < 0) return throw_errno(env, "read", errno);
  if (n != sizeof(value)) return throw_errno(env, "read", EINVAL); /* not an eventfd */
  return make_number(env, (double)value);
}

napi_value event_write(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  uint64_t value;
  ssize_t n;
  if (get_args(env, info, 2, argv, NULL) || arg_i32(env, argv[0], "fd", &fd) ||
      arg_uint(env, argv[1], "n", 9007199254740991.0, &value))
    return NULL;
  if (!ready_now(fd, POLLOUT)) return make_undefined(env); /* full: the reader is already woken */
  do n = write(fd, &value, sizeof(value));
  while (n < 0 && errno == EINTR);
  /* EAGAIN: the counter would overflow, so the reader is already woken. */
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return throw_errno(env, "write", errno);
  return make_undefined(env);
}

napi_value event_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (get_args(env, info, 1, argv, NULL) || arg_i32(env, argv[0], "fd", &fd)) return NULL;
  /* Linux releases the fd even when close() reports EINTR, so it is never retried. */
  if (close(fd) < 0 && errno != EINTR) return throw_errno(env, "close", errno);
  return make_undefined(env);
}

napi_value event_fence(napi_env env, napi_callback_info info) {
  UNUSED(info);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return make_undefined(env);
}
