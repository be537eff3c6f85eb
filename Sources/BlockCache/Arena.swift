import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The memory of the RAM tier: one shared mapping of an unlinked file in
/// /dev/shm (so its descriptor can later be handed to clients to map read-only),
/// cut into `slots` blocks of `blockSize` bytes. Pages are only backed once
/// touched. Owns the mapping; all access goes through `slot(_:)`.
final class Arena: @unchecked Sendable {
    let blockSize: Int
    let slots: Int
    let descriptor: Int32
    private let base: UnsafeMutableRawPointer

    init(budgetBytes: UInt64, blockSize: Int) throws(CacheError) {
        let slots = Int(budgetBytes / UInt64(blockSize))
        guard slots > 0 else { throw .configuration("ramCache.budgetBytes is smaller than one block (\(blockSize) bytes)") }
        let path = "/dev/shm/weightcache-arena-\(getpid())-\(UUID().uuidString)"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .system(syscall: "open", path: path, errno: errno) }
        unlink(path)  // lives as long as the descriptor and the mapping
        let size = slots * blockSize
        guard ftruncate(fd, off_t(size)) == 0 else {
            let e = errno
            close(fd)
            throw .system(syscall: "ftruncate", path: path, errno: e)
        }
        guard let memory = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), memory != MAP_FAILED else {
            let e = errno
            close(fd)
            throw .system(syscall: "mmap", path: path, errno: e)
        }
        self.blockSize = blockSize
        self.slots = slots
        self.descriptor = fd
        self.base = memory
    }

    deinit {
        munmap(base, slots * blockSize)
        close(descriptor)
    }

    /// The memory of slot `index`: valid while the arena lives; the cache's
    /// slot states say who may write or read it.
    func slot(_ index: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: base + index * blockSize, count: blockSize)
    }
}
