// Linux file calls that Swift's Glibc module does not expose (they need
// _GNU_SOURCE). Imported by the Staging and ObjectStore modules.
#ifndef WEIGHTCACHE_CFILESYSTEM_H
#define WEIGHTCACHE_CFILESYSTEM_H
#include <stdint.h>

/// Starts asynchronous writeback of [offset, offset+count) of fd
/// (sync_file_range with SYNC_FILE_RANGE_WRITE). Returns 0 or -1 with errno.
int wc_start_writeback(int fd, int64_t offset, int64_t count);

/// The O_DIRECT open flag of this platform (fcntl.h defines it only under _GNU_SOURCE).
int wc_o_direct(void);
#endif
