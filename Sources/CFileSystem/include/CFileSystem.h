// Linux file and memory calls that Swift's Glibc module does not expose (they
// need _GNU_SOURCE, or postdate its headers). Imported by the Staging,
// ObjectStore and BlockCache modules.
#ifndef WEIGHTCACHE_CFILESYSTEM_H
#define WEIGHTCACHE_CFILESYSTEM_H
#include <stddef.h>
#include <stdint.h>

/// Starts asynchronous writeback of [offset, offset+count) of fd
/// (sync_file_range with SYNC_FILE_RANGE_WRITE). Returns 0 or -1 with errno.
int wc_start_writeback(int fd, int64_t offset, int64_t count);

/// The O_DIRECT open flag of this platform (fcntl.h defines it only under _GNU_SOURCE).
int wc_o_direct(void);

/// Backs [address, address+length) of a private writable mapping with zeroed
/// pages now, in one call (madvise MADV_POPULATE_WRITE, Linux 5.14+), instead
/// of one page fault per page as it is first written. Returns 0 or -1 with
/// errno (EINVAL on kernels without it).
int wc_populate_write(void *address, size_t length);
#endif
