#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>
#include "CFileSystem.h"

int wc_start_writeback(int fd, int64_t offset, int64_t count) {
    return sync_file_range(fd, (off64_t)offset, (off64_t)count, SYNC_FILE_RANGE_WRITE);
}

int wc_o_direct(void) { return O_DIRECT; }

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // linux/mman.h since 5.14; older C libraries lack the name
#endif

int wc_populate_write(void *address, size_t length) { return madvise(address, length, MADV_POPULATE_WRITE); }
