#define _GNU_SOURCE
#include <fcntl.h>
#include "CFileSystem.h"

int wc_start_writeback(int fd, int64_t offset, int64_t count) {
    return sync_file_range(fd, (off64_t)offset, (off64_t)count, SYNC_FILE_RANGE_WRITE);
}

int wc_o_direct(void) { return O_DIRECT; }
