{
  "targets": [
    {
      "target_name": "vhost_native",
      "sources": ["addon.c", "cmsg.c", "copy.c", "copy_napi.c", "errno.c", "event.c", "mem.c", "sigbus.c", "sock.c", "tap.c", "uring.c", "uring_prep.c", "watch.c"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags": ["-std=c11", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"],
      # node's common.gypi may strip "-Werror" from cflags ("cflags!" when error_on_warn is false); not cflags_c.
      "cflags_c": ["-Werror"]
    }
  ]
}
