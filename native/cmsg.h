/* SCM_RIGHTS control-message parsing, apart from the syscall so it can be fuzzed (native/fuzz/). */
#ifndef VHOST_NATIVE_CMSG_H
#define VHOST_NATIVE_CMSG_H

#include <sys/socket.h>

/*
 * Collect the fds of every SOL_SOCKET/SCM_RIGHTS message in msg's control data into out[0..max) and return how
 * many were stored. fds beyond max are passed to close_fd (never leaked). A header whose cmsg_len is shorter than
 * a header or runs past msg_controllen ends the walk: nothing past the control buffer is read.
 */
int cmsg_collect_fds(const struct msghdr *msg, int *out, int max, void (*close_fd)(int fd));

#endif
