#if canImport(Glibc)
import Glibc
#endif

/// Which blocks of a partial download have landed: one byte per block (1 =
/// landed and, where digests are known, verified), in `<id>.blocks` beside the
/// partial. It is a hint that saves work after a crash, never a promise: on
/// resume every block it claims is checked again against the manifest before
/// it counts, so a torn or stale map costs a re-download, not bad data.
final class BlockMap: @unchecked Sendable {
    private let descriptor: Int32
    private let path: String
    let count: Int

    init(path: String, count: Int) throws(StagingError) {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .localIO(syscall: "open", path: path, errno: errno) }
        var info = stat()
        if fstat(fd, &info) != 0 || info.st_size != off_t(count) {
            // New, or left by another version of the object: start clean.
            if ftruncate(fd, 0) != 0 || ftruncate(fd, off_t(count)) != 0 {
                let e = errno
                close(fd)
                throw .localIO(syscall: "ftruncate", path: path, errno: e)
            }
        }
        self.descriptor = fd
        self.path = path
        self.count = count
    }

    deinit { close(descriptor) }

    /// The landed flags of every block.
    func load() throws(StagingError) -> [Bool] {
        var bytes = [UInt8](repeating: 0, count: count)
        let n = bytes.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, count, 0) }
        guard n == count else { throw .localIO(syscall: "pread", path: path, errno: n < 0 ? errno : EIO) }
        return bytes.map { $0 == 1 }
    }

    func set(_ blocks: Range<Int>, landed: Bool) throws(StagingError) {
        guard !blocks.isEmpty else { return }
        let bytes = [UInt8](repeating: landed ? 1 : 0, count: blocks.count)
        let n = bytes.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, blocks.count, off_t(blocks.lowerBound)) }
        guard n == blocks.count else { throw .localIO(syscall: "pwrite", path: path, errno: n < 0 ? errno : EIO) }
    }
}
