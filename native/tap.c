/* TAP interfaces (/dev/net/tun, IFF_TAP|IFF_NO_PI: one read()/write() = one Ethernet frame, no header) and plain
 * read()/write() on any non-blocking fd. No virtio-net header (IFF_VNET_HDR) and no offloads: frames cross whole,
 * with complete checksums. */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"

/* Set the interface's MTU and bring it up, each only if needed (SIOCGIFMTU/SIOCSIFMTU, SIOCGIFFLAGS/SIOCSIFFLAGS
 * on a datagram socket). Returns 0, or an errno value with *syscall naming the failing call. */
static int if_set_mtu_up(const char *name, int mtu, const char **syscall) {
  struct ifreq ifr;
  int err = 0;
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) {
    *syscall = "socket";
    return errno;
  }
  memset(&ifr, 0, sizeof(ifr));
  memcpy(ifr.ifr_name, name, strnlen(name, IFNAMSIZ - 1));
  /* Only change what differs: the getters need no privilege, so a pre-made tap that is already right needs none. */
  if (ioctl(s, SIOCGIFMTU, &ifr) < 0) {
    err = errno;
    *syscall = "ioctl(SIOCGIFMTU)";
    close(s);
    return err;
  }
  if (ifr.ifr_mtu != mtu) {
    ifr.ifr_mtu = mtu;
    if (ioctl(s, SIOCSIFMTU, &ifr) < 0) {
      err = errno;
      *syscall = "ioctl(SIOCSIFMTU)";
      close(s);
      return err;
    }
  }
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
    err = errno;
    *syscall = "ioctl(SIOCGIFFLAGS)";
  } else if (!(ifr.ifr_flags & IFF_UP)) {
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) {
      err = errno;
      *syscall = "ioctl(SIOCSIFFLAGS)";
    }
  }
  close(s);
  return err;
}

napi_value tap_open(napi_env env, napi_callback_info info) {
  napi_value argv[2], result, v;
  char name[IFNAMSIZ];
  size_t len;
  uint64_t mtu;
  if (get_args(env, info, 2, argv, NULL) || arg_string(env, argv[0], "name", name, sizeof(name), &len) ||
      arg_uint(env, argv[1], "mtu", 65535.0, &mtu))
    return NULL;
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, "open(/dev/net/tun)", errno);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof(ifr));
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  memcpy(ifr.ifr_name, name, len); /* len < IFNAMSIZ (checked by arg_string); "" lets the kernel pick tapN */
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int err = errno;
    close(fd);
    return throw_errno(env, "ioctl(TUNSETIFF)", err);
  }
  ifr.ifr_name[IFNAMSIZ - 1] = '\0';
  if (mtu > 0) {
    const char *syscall = "";
    int err = if_set_mtu_up(ifr.ifr_name, (int)mtu, &syscall);
    if (err) {
      close(fd);
      return throw_errno(env, syscall, err);
    }
  }
  NAPI_CALL(env, napi_create_object(env, &result));
  if (napi_create_int32(env, fd, &v) != napi_ok || napi_set_named_property(env, result, "fd", v) != napi_ok ||
      napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &v) != napi_ok ||
      napi_set_named_property(env, result, "name", v) != napi_ok) {
    close(fd);
    throw_napi_failure(env, "tapOpen result");
    return NULL;
  }
  return result;
}

napi_value fd_read(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t fd;
  uint8_t *data;
  size_t len;
  ssize_t n;
  if (get_args(env, info, 4, argv, NULL) || arg_i32(env, argv[0], "fd", &fd) ||
      arg_bytes(env, argv[1], argv[2], argv[3], &data, &len))
    return NULL;
  do n = read(fd, data, len);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return make_number(env, -1);
  if (n < 0) return throw_errno(env, "read", errno);
  return make_number(env, (double)n);
}

napi_value fd_write(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int32_t fd;
  uint8_t *data;
  size_t len;
  ssize_t n;
  if (get_args(env, info, 4, argv, NULL) || arg_i32(env, argv[0], "fd", &fd) ||
      arg_bytes(env, argv[1], argv[2], argv[3], &data, &len))
    return NULL;
  do n = write(fd, data, len);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return make_number(env, -1);
  if (n < 0) return throw_errno(env, "write", errno);
  return make_number(env, (double)n);
}
