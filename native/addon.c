/* vhost_native: module init and the export table. The contract is src/native/types.ts. */
#include "common.h"

#define FN(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_enumerable, NULL}

NAPI_MODULE_INIT() {
  napi_property_descriptor table[] = {
    FN("listenUnix", sock_listen_unix),
    FN("acceptUnix", sock_accept_unix),
    FN("connectUnix", sock_connect_unix),
    FN("recvMsg", sock_recv_msg),
    FN("sendMsg", sock_send_msg),
    FN("mmapShared", mem_mmap_shared),
    FN("munmap", mem_munmap),
    FN("memfdCreate", mem_memfd_create),
    FN("fdSize", mem_fd_size),
    FN("fdStat", mem_fd_stat),
    FN("mappingFaults", mem_mapping_faults),
    FN("mappingHandle", mem_mapping_handle),
    FN("copyBurst", copy_burst),
    FN("guestFaults", sigbus_guest_faults),
    FN("eventfd", event_eventfd),
    FN("eventfdRead", event_read),
    FN("eventfdWrite", event_write),
    FN("close", event_close),
    FN("fence", event_fence),
    FN("watch", watch_create),
    FN("tapOpen", tap_open),
    FN("read", fd_read),
    FN("write", fd_write),
    FN("uringSetup", uring_setup),
    FN("uringSubmit", uring_submit),
    FN("uringReap", uring_reap),
    FN("uringClose", uring_close),
  };
  if (napi_define_properties(env, exports, sizeof(table) / sizeof(table[0]), table) != napi_ok) return NULL;
  return exports;
}
