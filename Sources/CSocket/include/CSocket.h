// Unix-socket calls whose control-message maths (CMSG_*) and credential
// structs (struct ucred, _GNU_SOURCE) Swift cannot express directly.
// Imported by the UnixSocket module only.
#ifndef WEIGHTCACHE_CSOCKET_H
#define WEIGHTCACHE_CSOCKET_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// sendmsg of [buffer, buffer+length) with one SCM_RIGHTS descriptor attached
/// (MSG_NOSIGNAL). Returns the bytes sent or -1 with errno.
ssize_t wc_send_with_fd(int socket, const void *buffer, size_t length, int fd);

/// recvmsg into [buffer, buffer+length), collecting up to max_fds passed
/// descriptors (close-on-exec) into fds and their number into *fd_count; a
/// truncated control message's descriptors are closed and *truncated set.
/// Returns the bytes received (0 at end of stream) or -1 with errno.
ssize_t wc_recv_with_fds(int socket, void *buffer, size_t length, int *fds, int max_fds, int *fd_count, int *truncated);

/// accept4 with SOCK_CLOEXEC (a descriptor never leaks into a child).
int wc_accept(int socket);

/// The peer's credentials (SO_PEERCRED). Returns 0 or -1 with errno.
int wc_peer_credentials(int socket, uint32_t *uid, uint32_t *gid, int32_t *pid);
#endif
