// first-touch: what filling fresh memory costs, for the RAM tier's arena.
// Fills SIZE_MIB (default 256) of a new mapping in 4 MiB blocks by memcpy (as
// a block load does), then fills it again (the same copy into backed memory),
// and prints both times. MODE: 0 a file in /dev/shm (the arena until 2026-12-04),
// 1 the same with MADV_POPULATE_WRITE before each block, 2 anonymous memory
// in 4 KiB pages, 3 the same with MADV_POPULATE_WRITE, 4 anonymous memory
// with MADV_HUGEPAGE (the arena since), 2 MiB aligned.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    const size_t block = 4 << 20, huge = 2 << 20;
    const size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 256;
    const size_t size = (mib < 4 ? 4 : mib & ~3UL) << 20;
    const char *names[] = {"shm", "shm+populate", "anon4k", "anon4k+populate", "anonTHP"};
    int mode = argc > 1 ? atoi(argv[1]) : -1;
    if (mode < 0 || mode > 4) {
        fprintf(stderr, "usage: first-touch MODE (0-4) [SIZE_MIB]\n");
        return 2;
    }
    char *source = malloc(block);
    memset(source, 1, block);
    char *memory;
    if (mode < 2) {
        char path[64];
        snprintf(path, sizeof path, "/dev/shm/first-touch-%d", getpid());
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd < 0 || unlink(path) != 0 || ftruncate(fd, size) != 0) { perror(path); return 1; }
        memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    } else {
        char *raw = mmap(NULL, size + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        memory = raw == MAP_FAILED ? raw : (char *)(((unsigned long)raw + huge - 1) & ~(huge - 1));
        if (mode == 4 && memory != MAP_FAILED) madvise(memory, size, MADV_HUGEPAGE);
    }
    if (memory == MAP_FAILED) { perror("mmap"); return 1; }
    double start = now();
    for (size_t offset = 0; offset < size; offset += block) {
        if (mode == 1 || mode == 3) madvise(memory + offset, block, MADV_POPULATE_WRITE);
        memcpy(memory + offset, source, block);
    }
    double first = now() - start;
    start = now();
    for (size_t offset = 0; offset < size; offset += block) memcpy(memory + offset, source, block);
    printf("%-16s first fill %7.1f ms   refill %6.1f ms   (%zu MiB)\n", names[mode], first * 1000, (now() - start) * 1000, size >> 20);
    return 0;
}
