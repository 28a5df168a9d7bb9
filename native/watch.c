/* FdWatcher: a uv_poll_t on Node's loop calling cb(status, events) (this = the watcher) via napi_make_callback.
 *
 * Lifetime. The struct has two owners: the uv handle (released in the uv_close callback) and the JS object's wrap
 * (released by its finalizer); it is freed when both let go. While the handle is open the JS object and callback
 * are held by strong references, so a running watcher is never collected; close() releases them (in the close
 * callback, so close() from inside cb is safe). A stopped or closed handle does not keep the loop alive. An async
 * cleanup hook closes the handle if the environment (e.g. a worker) is torn down first. */
#include <stdlib.h>
#include <uv.h>

#include "common.h"

typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_ref cb;
  napi_ref self;
  napi_async_context ctx;
  napi_async_cleanup_hook_handle hook;
  int closing;   /* uv_close issued */
  int teardown;  /* the environment is going away: do not call N-API any more */
  int handle_done;
  int js_done;
} watcher_t;

static void on_closed(uv_handle_t *h) {
  watcher_t *w = h->data;
  if (!w->teardown) {
    napi_delete_reference(w->env, w->cb);
    napi_delete_reference(w->env, w->self);
    napi_async_destroy(w->env, w->ctx);
  }
  napi_remove_async_cleanup_hook(w->hook);
  w->handle_done = 1;
  if (w->js_done) free(w);
}

static void begin_close(watcher_t *w) {
  if (w->closing) return;
  w->closing = 1;
  uv_close((uv_handle_t *)&w->handle, on_closed);
}

static void on_teardown(napi_async_cleanup_hook_handle hook, void *arg) {
  UNUSED(hook);
  watcher_t *w = arg;
  w->teardown = 1;
  begin_close(w);
}

static void on_finalize(napi_env env, void *data, void *hint) {
  UNUSED(env);
  UNUSED(hint);
  watcher_t *w = data;
  w->js_done = 1;
  if (w->handle_done) free(w);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  watcher_t *w = h->data;
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_value cb, recv, argv[2], result;
  if (w->closing || napi_open_handle_scope(env, &scope) != napi_ok) return;
  if (napi_get_reference_value(env, w->cb, &cb) == napi_ok && cb && napi_get_reference_value(env, w->self, &recv) == napi_ok && recv &&
      napi_create_int32(env, status, &argv[0]) == napi_ok && napi_create_int32(env, events, &argv[1]) == napi_ok &&
      napi_make_callback(env, w->ctx, recv, cb, 2, argv, &result) != napi_ok) {
    bool pending = false;
    napi_value err;
    napi_is_exception_pending(env, &pending);
    if (pending && napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
  }
  napi_close_handle_scope(env, scope);
}

static int this_watcher(napi_env env, napi_callback_info info, napi_value *argv, size_t n, watcher_t **out) {
  napi_value self;
  void *data = NULL;
  if (get_args(env, info, n, argv, &self)) return -1;
  if (napi_unwrap(env, self, &data) != napi_ok || !data) {
    throw_type(env, "FdWatcher method called on an incompatible receiver");
    return -1;
  }
  *out = data;
  return 0;
}

static napi_value poll_start(napi_env env, watcher_t *w, napi_value events_arg) {
  int32_t events;
  if (arg_i32(env, events_arg, "events", &events)) return NULL;
  if (events & ~(UV_READABLE | UV_WRITABLE | UV_DISCONNECT)) return throw_range(env, "events must be POLL_* bits");
  if (w->closing) {
    napi_throw_error(env, "ERR_WATCHER_CLOSED", "FdWatcher is closed");
    return NULL;
  }
  int r = uv_poll_start(&w->handle, events, on_poll);
  if (r < 0) return throw_errno(env, "uv_poll_start", -r);
  return make_undefined(env);
}

static napi_value m_start(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  watcher_t *w;
  if (this_watcher(env, info, argv, 1, &w)) return NULL;
  return poll_start(env, w, argv[0]);
}

static napi_value m_stop(napi_env env, napi_callback_info info) {
  watcher_t *w;
  if (this_watcher(env, info, NULL, 0, &w)) return NULL;
  if (!w->closing) uv_poll_stop(&w->handle);
  return make_undefined(env);
}

static napi_value m_close(napi_env env, napi_callback_info info) {
  watcher_t *w;
  if (this_watcher(env, info, NULL, 0, &w)) return NULL;
  begin_close(w);
  return make_undefined(env);
}

napi_value watch_create(napi_env env, napi_callback_info info) {
  napi_value argv[3], obj, name;
  napi_valuetype t;
  int32_t fd;
  uv_loop_t *loop;
  if (get_args(env, info, 3, argv, NULL) || arg_i32(env, argv[0], "fd", &fd)) return NULL;
  if (napi_typeof(env, argv[2], &t) != napi_ok || t != napi_function) return throw_type(env, "cb must be a function");
  NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
  watcher_t *w = calloc(1, sizeof(*w));
  if (!w) return throw_errno(env, "malloc", 12 /* ENOMEM */);
  w->env = env;
  w->handle.data = w;
  int r = uv_poll_init(loop, &w->handle, fd);
  if (r < 0) {
    free(w);
    return throw_errno(env, "uv_poll_init", -r);
  }
  /* The handle is live: from here every failure path goes through close (and the wrap, once it exists). */
  w->js_done = 1;
  napi_property_descriptor methods[] = {
    {"start", NULL, m_start, NULL, NULL, NULL, napi_default, NULL},
    {"stop", NULL, m_stop, NULL, NULL, NULL, napi_default, NULL},
    {"close", NULL, m_close, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_create_object(env, &obj) != napi_ok || napi_define_properties(env, obj, 3, methods) != napi_ok ||
      napi_create_string_utf8(env, "VhostFdWatcher", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &w->ctx) != napi_ok ||
      napi_create_reference(env, argv[2], 1, &w->cb) != napi_ok ||
      napi_create_reference(env, obj, 1, &w->self) != napi_ok ||
      napi_add_async_cleanup_hook(env, on_teardown, w, &w->hook) != napi_ok ||
      napi_wrap(env, obj, w, on_finalize, NULL, NULL) != napi_ok) {
    /* Unwind: N-API pieces that were not created are NULL and their release is a harmless error. */
    w->teardown = 1;
    if (w->cb) napi_delete_reference(env, w->cb);
    if (w->self) napi_delete_reference(env, w->self);
    if (w->ctx) napi_async_destroy(env, w->ctx);
    begin_close(w);
    throw_napi_failure(env, "watch");
    return NULL;
  }
  w->js_done = 0;
  if (!poll_start(env, w, argv[1])) {
    begin_close(w); /* the wrap finalizer frees it later */
    return NULL;
  }
  return obj;
}
