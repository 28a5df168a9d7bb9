/* mmap of shared fds as external ArrayBuffers; munmap detaches. memfd_create and fstat for tests and checks. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "copy.h"
#include "sigbus.h"

/* A mapping's guard slot is its copy handle's slot: the two tables must be the same size. */
_Static_assert(COPY_SLOTS == SIGBUS_SLOTS, "copy.h COPY_SLOTS must equal sigbus.h SIGBUS_SLOTS");

#define MAX_MAP_SIZE 4294967296.0 /* a typed array view is limited to 4 GiB on Node 20 */
#define MAX_OFFSET 9007199254740991.0

/* One mapping. Two owners: the ArrayBuffer's backing store (its finalizer unmaps if still mapped) and the wrap on
 * the ArrayBuffer object (so munmap(ab) can find it). Freed when both have let go; mapped guards double munmap. */
typedef struct {
  void *base;
  size_t len;
  int mapped;
  int owners;
  int slot; /* in the SIGBUS guard (sigbus.c) while mapped, and in the copy table (copy.c) */
  double handle; /* for copyBurst (copy.c), -1 when the mapping has none */
} mapping_t;

static const napi_type_tag mapping_tag = {0x76686f7374646d6dULL, 0x6d61707069e67321ULL};

static void mapping_release(mapping_t *m) {
  if (--m->owners == 0) free(m);
}

static void mapping_unmap(mapping_t *m) {
  if (!m->mapped) return;
  /* Stale the copy handle before the slot can be reused by another mapping. */
  copy_unmap(&copy_table, m->slot);
  sigbus_unregister(m->slot);
  munmap(m->base, m->len);
  m->mapped = 0;
}

static void backing_finalize(napi_env env, void *data, void *hint) {
  UNUSED(env);
  UNUSED(data);
  mapping_unmap(hint);
  mapping_release(hint);
}

static void wrap_finalize(napi_env env, void *data, void *hint) {
  UNUSED(env);
  UNUSED(hint);
  mapping_release(data);
}

napi_value mem_mmap_shared(napi_env env, napi_callback_info info) {
  napi_value argv[4], ab;
  int32_t fd;
  uint64_t size, offset;
  int writable;
  if (get_args(env, info, 4, argv, NULL) || arg_i32(env, argv[0], "fd", &fd) ||
      arg_uint(env, argv[1], "size", MAX_MAP_SIZE, &size) || arg_uint(env, argv[2], "offset", MAX_OFFSET, &offset) ||
      arg_bool(env, argv[3], "writable", &writable))
    return NULL;
  if (size == 0) return throw_range(env, "The \"size\" argument must be > 0");
  uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
  uint64_t delta = offset & (page - 1);
  mapping_t *m = calloc(1, sizeof(*m));
  if (!m) return throw_errno(env, "malloc", ENOMEM);
  m->len = (size_t)(size + delta);
  m->base = mmap(NULL, m->len, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED | MAP_NORESERVE, fd,
                 (off_t)(offset - delta));
  if (m->base == MAP_FAILED) {
    int err = errno;
    free(m);
    return throw_errno(env, "mmap", err);
  }
  /* A front-end can truncate the file later (or its tmpfs can be full): a fault must not kill the daemon. */
  m->slot = sigbus_register(m->base, m->len);
  if (m->slot < 0) {
    munmap(m->base, m->len);
    free(m);
    return throw_code(env, "mmap", "ENOSPC", "no slot left in the SIGBUS guard for another guest mapping");
  }
  m->mapped = 1;
  m->owners = 1; /* the backing store */
  m->handle = copy_map(&copy_table, m->slot, (char *)m->base + delta, (size_t)size, env);
  if (napi_create_external_arraybuffer(env, (char *)m->base + delta, (size_t)size, backing_finalize, m, &ab) !=
      napi_ok) {
    mapping_unmap(m);
    free(m);
    throw_napi_failure(env, "napi_create_external_arraybuffer");
    return NULL;
  }
  /* From here the backing store owns m; the wrap takes the second share. */
  m->owners = 2;
  if (napi_type_tag_object(env, ab, &mapping_tag) != napi_ok || napi_wrap(env, ab, m, wrap_finalize, NULL, NULL) != napi_ok) {
    m->owners = 1;
    throw_napi_failure(env, "napi_wrap");
    return NULL;
  }
  return ab;
}

/* The mapping behind an ArrayBuffer from mmapShared(), or NULL with a TypeError pending. */
static mapping_t *mapping_of(napi_env env, napi_value ab) {
  bool ours = false;
  void *data = NULL;
  if (napi_check_object_type_tag(env, ab, &mapping_tag, &ours) != napi_ok || !ours || napi_unwrap(env, ab, &data) != napi_ok) {
    throw_type(env, "The \"ab\" argument must be an ArrayBuffer returned by mmapShared()");
    return NULL;
  }
  return data;
}

napi_value mem_munmap(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  bool detached = false;
  if (get_args(env, info, 1, argv, NULL)) return NULL;
  mapping_t *m = mapping_of(env, argv[0]);
  if (!m) return NULL;
  NAPI_CALL(env, napi_is_detached_arraybuffer(env, argv[0], &detached));
  /* Detached elsewhere (e.g. transferred): the memory may live on in another ArrayBuffer; its finalizer unmaps. */
  if (detached) return make_undefined(env);
  NAPI_CALL(env, napi_detach_arraybuffer(env, argv[0]));
  mapping_unmap(m);
  return make_undefined(env);
}

napi_value mem_mapping_faults(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv, NULL)) return NULL;
  mapping_t *m = mapping_of(env, argv[0]);
  if (!m) return NULL;
  return make_number(env, m->mapped ? (double)sigbus_slot_faults(m->slot) : 0);
}

/* The mapping's copyBurst handle, or -1 once unmapped (or when it has none). */
napi_value mem_mapping_handle(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (get_args(env, info, 1, argv, NULL)) return NULL;
  mapping_t *m = mapping_of(env, argv[0]);
  if (!m) return NULL;
  return make_number(env, m->mapped ? m->handle : -1);
}

napi_value mem_memfd_create(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char name[250];
  size_t len;
  uint64_t size;
  if (get_args(env, info, 2, argv, NULL) || arg_string(env, argv[0], "name", name, sizeof(name), &len) ||
      arg_uint(env, argv[1], "size", MAX_OFFSET, &size))
    return NULL;
  int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return throw_errno(env, "memfd_create", errno);
  int r;
  do r = ftruncate(fd, (off_t)size);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "ftruncate", err);
  }
  return make_number(env, fd);
}

napi_value mem_fd_size(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  struct stat st;
  if (get_args(env, info, 1, argv, NULL) || arg_i32(env, argv[0], "fd", &fd)) return NULL;
  if (fstat(fd, &st) < 0) return throw_errno(env, "fstat", errno);
  return make_number(env, (double)st.st_size);
}

static int set_number(napi_env env, napi_value obj, const char *key, double v) {
  napi_value n;
  return napi_create_double(env, v, &n) != napi_ok || napi_set_named_property(env, obj, key, n) != napi_ok;
}

/* fstat + F_GETFL + readlink(/proc/self/fd/N): what a received fd is, for the checks in TypeScript. */
napi_value mem_fd_stat(napi_env env, napi_callback_info info) {
  napi_value argv[1], obj, link;
  int32_t fd;
  struct stat st;
  char path[64], target[256];
  if (get_args(env, info, 1, argv, NULL) || arg_i32(env, argv[0], "fd", &fd)) return NULL;
  if (fstat(fd, &st) < 0) return throw_errno(env, "fstat", errno);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0) return throw_errno(env, "fcntl", errno);
  snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(path, target, sizeof(target) - 1);
  if (n < 0) n = 0; /* no /proc: the link stays empty and eventfd checks refuse */
  target[n] = 0;
  NAPI_CALL(env, napi_create_object(env, &obj));
  NAPI_CALL(env, napi_create_string_utf8(env, target, (size_t)n, &link));
  if (set_number(env, obj, "mode", (double)st.st_mode) || set_number(env, obj, "size", (double)st.st_size) ||
      set_number(env, obj, "flags", (double)flags) || napi_set_named_property(env, obj, "link", link) != napi_ok) {
    throw_napi_failure(env, "fdStat");
    return NULL;
  }
  return obj;
}
