/* SCM_RIGHTS control-message parsing (see cmsg.h). Pure: no syscall except through close_fd. */
#include "cmsg.h"

#include <stdint.h>
#include <string.h>

int cmsg_collect_fds(const struct msghdr *msg, int *out, int max, void (*close_fd)(int fd)) {
  int n = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
    /* The kernel writes well-formed headers; check anyway, so a bad length never reads past the buffer. */
    size_t room = msg->msg_controllen - (size_t)((unsigned char *)c - (unsigned char *)msg->msg_control);
    if (c->cmsg_len < CMSG_LEN(0) || c->cmsg_len > room) break;
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    for (int i = 0; i < count; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      if (n < max) out[n++] = fd;
      else close_fd(fd);
    }
  }
  return n;
}
