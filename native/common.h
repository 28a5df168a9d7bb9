/* Shared declarations for vhost_native: argument accessors, error throwers, exported functions. */
#ifndef VHOST_NATIVE_COMMON_H
#define VHOST_NATIVE_COMMON_H

#include <node_api.h>
#include <stddef.h>
#include <stdint.h>

#define UNUSED(x) ((void)(x))

/* Bail out of a napi_callback (returning NULL) when an N-API call fails; throws if nothing is pending. */
#define NAPI_CALL(env, call)                                   \
  do {                                                         \
    if ((call) != napi_ok) {                                   \
      throw_napi_failure((env), #call);                        \
      return NULL;                                             \
    }                                                          \
  } while (0)

/* errno.c: every throw_* returns NULL so callers can `return throw_...(...)`. */
napi_value throw_errno(napi_env env, const char *syscall, int err);
napi_value throw_code(napi_env env, const char *syscall, const char *code, const char *detail);
napi_value throw_type(napi_env env, const char *msg);
napi_value throw_range(napi_env env, const char *msg);
void throw_napi_failure(napi_env env, const char *what);
napi_value make_number(napi_env env, double v);
napi_value make_undefined(napi_env env);

/* Argument accessors: return 0, or -1 with a TypeError/RangeError pending. */
int get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, napi_value *self);
int arg_i32(napi_env env, napi_value v, const char *name, int32_t *out);
int arg_uint(napi_env env, napi_value v, const char *name, double max, uint64_t *out); /* integer in [0, max] */
int arg_bool(napi_env env, napi_value v, const char *name, int *out);
int arg_string(napi_env env, napi_value v, const char *name, char *buf, size_t cap, size_t *len);
/* A Uint8Array (or Buffer) and a checked sub-range [off, off+len) of it. */
int arg_bytes(napi_env env, napi_value buf, napi_value off, napi_value len, uint8_t **data, size_t *n);

/* Exported functions. */
napi_value sock_listen_unix(napi_env env, napi_callback_info info);
napi_value sock_accept_unix(napi_env env, napi_callback_info info);
napi_value sock_connect_unix(napi_env env, napi_callback_info info);
napi_value sock_recv_msg(napi_env env, napi_callback_info info);
napi_value sock_send_msg(napi_env env, napi_callback_info info);
napi_value mem_mmap_shared(napi_env env, napi_callback_info info);
napi_value mem_munmap(napi_env env, napi_callback_info info);
napi_value mem_memfd_create(napi_env env, napi_callback_info info);
napi_value mem_fd_size(napi_env env, napi_callback_info info);
napi_value mem_fd_stat(napi_env env, napi_callback_info info);
napi_value mem_mapping_faults(napi_env env, napi_callback_info info);
napi_value mem_mapping_handle(napi_env env, napi_callback_info info);
napi_value copy_burst(napi_env env, napi_callback_info info);
napi_value sigbus_guest_faults(napi_env env, napi_callback_info info);
napi_value event_eventfd(napi_env env, napi_callback_info info);
napi_value event_read(napi_env env, napi_callback_info info);
napi_value event_write(napi_env env, napi_callback_info info);
napi_value event_close(napi_env env, napi_callback_info info);
napi_value event_fence(napi_env env, napi_callback_info info);
napi_value watch_create(napi_env env, napi_callback_info info);
napi_value tap_open(napi_env env, napi_callback_info info);
napi_value fd_read(napi_env env, napi_callback_info info);
napi_value fd_write(napi_env env, napi_callback_info info);

/* uring.c: io_uring for disk I/O (src/blk/uring-engine.ts). */
napi_value uring_setup(napi_env env, napi_callback_info info);
napi_value uring_submit(napi_env env, napi_callback_info info);
napi_value uring_reap(napi_env env, napi_callback_info info);
napi_value uring_close(napi_env env, napi_callback_info info);

#endif
