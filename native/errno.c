/* Node-style errors ({ code, errno, syscall }) and the argument checks that throw TypeError/RangeError. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "common.h"

static const struct { int err; const char *name; } errno_names[] = {
  {EPERM, "EPERM"}, {ENOENT, "ENOENT"}, {EINTR, "EINTR"}, {EIO, "EIO"}, {EBADF, "EBADF"},
  {EAGAIN, "EAGAIN"}, {ENOMEM, "ENOMEM"}, {EACCES, "EACCES"}, {EFAULT, "EFAULT"}, {EBUSY, "EBUSY"},
  {EEXIST, "EEXIST"}, {ENODEV, "ENODEV"}, {ENOTDIR, "ENOTDIR"}, {EINVAL, "EINVAL"}, {ENFILE, "ENFILE"},
  {EMFILE, "EMFILE"}, {ENOSPC, "ENOSPC"}, {EPIPE, "EPIPE"}, {ENAMETOOLONG, "ENAMETOOLONG"},
  {ENOSYS, "ENOSYS"}, {ENOTSOCK, "ENOTSOCK"}, {EOPNOTSUPP, "EOPNOTSUPP"}, {EADDRINUSE, "EADDRINUSE"},
  {ECONNRESET, "ECONNRESET"}, {ENOTCONN, "ENOTCONN"}, {ECONNREFUSED, "ECONNREFUSED"},
  {ETOOMANYREFS, "ETOOMANYREFS"}, {EOVERFLOW, "EOVERFLOW"},
};

static const char *errno_name(int err, char *buf, size_t cap) {
  for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++)
    if (errno_names[i].err == err) return errno_names[i].name;
  return uv_err_name_r(-err, buf, cap);
}

static napi_value throw_error(napi_env env, const char *code, const char *msg, int err, const char *syscall) {
  napi_value ecode, emsg, error, v;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &ecode) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &emsg) != napi_ok ||
      napi_create_error(env, ecode, emsg, &error) != napi_ok) {
    napi_throw_error(env, code, msg);
    return NULL;
  }
  if (err > 0 && napi_create_int32(env, err, &v) == napi_ok) napi_set_named_property(env, error, "errno", v);
  if (syscall && napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v) == napi_ok)
    napi_set_named_property(env, error, "syscall", v);
  napi_throw(env, error);
  return NULL;
}

napi_value throw_errno(napi_env env, const char *syscall, int err) {
  char namebuf[64], strbuf[128], msg[256];
  const char *name = errno_name(err, namebuf, sizeof(namebuf));
  const char *text = strerror_r(err, strbuf, sizeof(strbuf)); /* GNU variant */
  snprintf(msg, sizeof(msg), "%s failed: %s (%s)", syscall, name, text);
  return throw_error(env, name, msg, err, syscall);
}

napi_value throw_code(napi_env env, const char *syscall, const char *code, const char *detail) {
  char msg[256];
  snprintf(msg, sizeof(msg), "%s failed: %s (%s)", syscall, code, detail);
  return throw_error(env, code, msg, 0, syscall);
}

napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

napi_value throw_range(napi_env env, const char *msg) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

void throw_napi_failure(napi_env env, const char *what) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) return;
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info);
  char msg[256];
  snprintf(msg, sizeof(msg), "N-API call failed: %s: %s", what,
           info && info->error_message ? info->error_message : "unknown error");
  napi_throw_error(env, "ERR_NAPI", msg);
}

napi_value make_number(napi_env env, double v) {
  napi_value r;
  NAPI_CALL(env, napi_create_double(env, v, &r));
  return r;
}

napi_value make_undefined(napi_env env) {
  napi_value r;
  NAPI_CALL(env, napi_get_undefined(env, &r));
  return r;
}

/* ---- argument checks ---- */

static int fail_type(napi_env env, const char *name, const char *what) {
  char msg[160];
  snprintf(msg, sizeof(msg), "The \"%s\" argument must be %s", name, what);
  throw_type(env, msg);
  return -1;
}

int get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, napi_value *self) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, self, NULL) != napi_ok) {
    throw_napi_failure(env, "napi_get_cb_info");
    return -1;
  }
  if (argc < n) {
    char msg[96];
    snprintf(msg, sizeof(msg), "expected %zu arguments, got %zu", n, argc);
    throw_type(env, msg);
    return -1;
  }
  return 0;
}

static int arg_number(napi_env env, napi_value v, const char *name, double *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return fail_type(env, name, "a number");
  napi_get_value_double(env, v, out);
  return 0;
}

int arg_i32(napi_env env, napi_value v, const char *name, int32_t *out) {
  double d;
  if (arg_number(env, v, name, &d)) return -1;
  if (d != floor(d) || d < INT32_MIN || d > INT32_MAX) return fail_type(env, name, "a 32-bit integer");
  *out = (int32_t)d;
  return 0;
}

int arg_uint(napi_env env, napi_value v, const char *name, double max, uint64_t *out) {
  double d;
  if (arg_number(env, v, name, &d)) return -1;
  if (d != floor(d) || d < 0 || d > max) {
    char msg[160];
    snprintf(msg, sizeof(msg), "The \"%s\" argument must be an integer in [0, %.0f], got %g", name, max, d);
    throw_range(env, msg);
    return -1;
  }
  *out = (uint64_t)d;
  return 0;
}

int arg_bool(napi_env env, napi_value v, const char *name, int *out) {
  bool b;
  if (napi_get_value_bool(env, v, &b) != napi_ok) return fail_type(env, name, "a boolean");
  *out = b;
  return 0;
}

int arg_string(napi_env env, napi_value v, const char *name, char *buf, size_t cap, size_t *len) {
  size_t n;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &n) != napi_ok) return fail_type(env, name, "a string");
  if (n + 1 > cap) {
    char msg[160];
    snprintf(msg, sizeof(msg), "The \"%s\" argument is too long (%zu bytes, at most %zu)", name, n, cap - 1);
    throw_range(env, msg);
    return -1;
  }
  napi_get_value_string_utf8(env, v, buf, cap, &n);
  if (strlen(buf) != n) return fail_type(env, name, "a string without NUL characters");
  *len = n;
  return 0;
}

int arg_bytes(napi_env env, napi_value buf, napi_value off, napi_value len, uint8_t **data, size_t *n) {
  bool is_ta = false;
  napi_typedarray_type type;
  size_t length;
  void *base;
  uint64_t o, l;
  if (napi_is_typedarray(env, buf, &is_ta) != napi_ok || !is_ta) return fail_type(env, "buf", "a Uint8Array");
  napi_get_typedarray_info(env, buf, &type, &length, &base, NULL, NULL);
  if (type != napi_uint8_array) return fail_type(env, "buf", "a Uint8Array");
  if (arg_uint(env, off, "off", (double)length, &o) || arg_uint(env, len, "len", (double)(length - o), &l)) return -1;
  *data = base ? (uint8_t *)base + o : NULL;
  *n = (size_t)l;
  return 0;
}
