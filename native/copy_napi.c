/* copyBurst(ops, n): the N-API side of copy.c. One call per burst; returns the number of ops refused. */
#include "common.h"
#include "copy.h"

napi_value copy_burst(napi_env env, napi_callback_info info) {
  napi_value argv[2], out;
  bool is_ta = false;
  napi_typedarray_type type;
  size_t length;
  void *base;
  uint32_t n;
  if (get_args(env, info, 2, argv, NULL)) return NULL;
  if (napi_is_typedarray(env, argv[0], &is_ta) != napi_ok || !is_ta) return throw_type(env, "The \"ops\" argument must be a Float64Array");
  NAPI_CALL(env, napi_get_typedarray_info(env, argv[0], &type, &length, &base, NULL, NULL));
  if (type != napi_float64_array) return throw_type(env, "The \"ops\" argument must be a Float64Array");
  if (napi_get_value_uint32(env, argv[1], &n) != napi_ok) return throw_type(env, "The \"n\" argument must be a number");
  if ((uint64_t)n * COPY_OP_FIELDS > length) return throw_range(env, "The \"n\" argument is larger than the ops array holds");
  /* The env is the calling thread's: a handle made on another thread (worker) is refused. */
  uint32_t refused = copy_run(&copy_table, base, n, env);
  /* An int32 result is a small integer in V8: no heap number allocated per burst. */
  NAPI_CALL(env, napi_create_int32(env, (int32_t)refused, &out));
  return out;
}
