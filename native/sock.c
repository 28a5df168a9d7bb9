/* Unix stream sockets and recvmsg/sendmsg with SCM_RIGHTS. Every fd is O_NONBLOCK|O_CLOEXEC. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cmsg.h"
#include "common.h"

#define MAX_RECV_FDS 8  /* MAX_FDS_PER_MSG in src/native/types.ts */
#define MAX_SEND_FDS 16 /* more than the receiver takes, so tests can provoke MSG_CTRUNC */

static int arg_sockaddr(napi_env env, napi_value v, struct sockaddr_un *sa) {
  size_t len;
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  return arg_string(env, v, "path", sa->sun_path, sizeof(sa->sun_path), &len);
}

static void close_quietly(int fd) { close(fd); }

static napi_value fail_close(napi_env env, const char *syscall, int fd) {
  int err = errno;
  close(fd);
  return throw_errno(env, syscall, err);
}

napi_value sock_listen_unix(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct sockaddr_un sa;
  int32_t backlog;
  if (get_args(env, info, 2, argv, NULL) || arg_sockaddr(env, argv[0], &sa) ||
      arg_i32(env, argv[1], "backlog", &backlog))
    return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) return fail_close(env, "bind", fd);
  if (listen(fd, backlog) < 0) return fail_close(env, "listen", fd);
  return make_number(env, fd);
}

napi_value sock_accept_unix(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t lfd;
  if (get_args(env, info, 1, argv, NULL) || arg_i32(env, argv[0], "listenFd", &lfd)) return NULL;
  int fd;
  do fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED)) return make_number(env, -1);
  if (fd < 0) return throw_errno(env, "accept4", errno);
  return make_number(env, fd);
}

napi_value sock_connect_unix(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  struct sockaddr_un sa;
  if (get_args(env, info, 1, argv, NULL) || arg_sockaddr(env, argv[0], &sa)) return NULL;
  /* Connect while blocking (a unix connect completes at once or fails), then switch to non-blocking. */
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
    if (errno != EINTR) return fail_close(env, "connect", fd);
    /* Interrupted: the connect goes on in the kernel; wait for it and read its result. */
    struct pollfd p = {.fd = fd, .events = POLLOUT, .revents = 0};
    int err = 0;
    socklen_t elen = sizeof(err);
    while (poll(&p, 1, -1) < 0)
      if (errno != EINTR) return fail_close(env, "poll", fd);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0) return fail_close(env, "getsockopt", fd);
    if (err) {
      close(fd);
      return throw_errno(env, "connect", err);
    }
  }
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return fail_close(env, "fcntl", fd);
  return make_number(env, fd);
}

napi_value sock_recv_msg(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int32_t fd;
  uint8_t *data;
  size_t len, fds_len;
  bool is_ta = false;
  napi_typedarray_type type;
  void *fds_base;
  if (get_args(env, info, 5, argv, NULL) || arg_i32(env, argv[0], "fd", &fd) ||
      arg_bytes(env, argv[1], argv[2], argv[3], &data, &len))
    return NULL;
  if (napi_is_typedarray(env, argv[4], &is_ta) != napi_ok || !is_ta) return throw_type(env, "fdsOut must be an Int32Array");
  NAPI_CALL(env, napi_get_typedarray_info(env, argv[4], &type, &fds_len, &fds_base, NULL, NULL));
  if (type != napi_int32_array) return throw_type(env, "fdsOut must be an Int32Array");
  if (fds_len < 1 + MAX_RECV_FDS) return throw_range(env, "fdsOut must have room for 1 + 8 entries");
  int32_t *fds_out = fds_base;
  fds_out[0] = 0;

  union { char buf[CMSG_SPACE(MAX_RECV_FDS * sizeof(int))]; struct cmsghdr align; } ctl;
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
  ssize_t n;
  do n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return make_number(env, -1);
  if (n < 0) return throw_errno(env, "recvmsg", errno);

  int nfds = cmsg_collect_fds(&msg, fds_out + 1, MAX_RECV_FDS, close_quietly); /* beyond 8: closed, never leaked */
  if (msg.msg_flags & MSG_CTRUNC) {
    for (int i = 0; i < nfds; i++) close(fds_out[1 + i]);
    fds_out[0] = 0;
    return throw_code(env, "recvmsg", "ECTRUNC", "control data truncated: more than 8 fds in one message");
  }
  fds_out[0] = nfds;
  return make_number(env, (double)n);
}

napi_value sock_send_msg(napi_env env, napi_callback_info info) {
  napi_value argv[5], v;
  int32_t fd;
  uint8_t *data;
  size_t len;
  uint32_t nfds = 0;
  napi_valuetype t;
  if (get_args(env, info, 5, argv, NULL) || arg_i32(env, argv[0], "fd", &fd)) return NULL;
  /* fds: any ArrayLike<number> (Array, Int32Array, ...). Read before buf: element getters may run JS. */
  if (napi_typeof(env, argv[4], &t) != napi_ok || t != napi_object ||
      napi_get_named_property(env, argv[4], "length", &v) != napi_ok ||
      napi_get_value_uint32(env, v, &nfds) != napi_ok)
    return throw_type(env, "fds must be an array-like of numbers");
  if (nfds > MAX_SEND_FDS) return throw_range(env, "too many fds for one message");

  union { char buf[CMSG_SPACE(MAX_SEND_FDS * sizeof(int))]; struct cmsghdr align; } ctl;
  memset(&ctl, 0, sizeof(ctl));
  struct iovec iov = {.iov_base = NULL, .iov_len = 0};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    msg.msg_control = ctl.buf;
    msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    for (uint32_t i = 0; i < nfds; i++) {
      int32_t one;
      NAPI_CALL(env, napi_get_element(env, argv[4], i, &v));
      if (arg_i32(env, v, "fds[i]", &one)) return NULL;
      memcpy(CMSG_DATA(c) + i * sizeof(int), &one, sizeof(int));
    }
  }
  if (arg_bytes(env, argv[1], argv[2], argv[3], &data, &len)) return NULL;
  iov.iov_base = data;
  iov.iov_len = len;
  ssize_t n;
  do n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return make_number(env, -1);
  if (n < 0) return throw_errno(env, "sendmsg", errno);
  return make_number(env, (double)n);
}
