#if canImport(Glibc)
import Glibc
#endif

/// Why a file could not be hashed: the syscall, the path and errno.
public struct FileDigestError: Error, Equatable, CustomStringConvertible {
    public var syscall: String
    public var path: String
    public var errno: Int32

    public init(syscall: String, path: String, errno: Int32) {
        self.syscall = syscall
        self.path = path
        self.errno = errno
    }

    public var description: String {
        "\(syscall)(\(path)): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// A file's size, xxh3-128 and per-block xxh3-64 digests, from one read.
public struct FileDigests: Sendable, Equatable {
    public var size: UInt64
    public var whole: Digest128
    public var blocks: [UInt64]

    /// Reads `path` once, sequentially, `blockSize` bytes at a time, so memory
    /// stays at one block whatever the file size; `eachBlock` sees every block
    /// in order (to compress it in the same pass). Blocks the calling thread.
    public init(
        ofFile path: String, blockSize: Int,
        eachBlock: (UnsafeRawBufferPointer) throws(FileDigestError) -> Void = { _ in }
    ) throws(FileDigestError) {
        precondition(blockSize > 0)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileDigestError(syscall: "open", path: path, errno: errno) }
        defer { close(fd) }
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
        var hasher = Hasher128()
        var blocks: [UInt64] = []
        var size: UInt64 = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 4096)
        defer { buffer.deallocate() }
        while true {
            // Fill a whole block (read may return less) so block digests line up.
            var filled = 0
            while filled < blockSize {
                let n = read(fd, buffer.baseAddress! + filled, blockSize - filled)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw FileDigestError(syscall: "read", path: path, errno: errno)
                }
                if n == 0 { break }
                filled += n
            }
            if filled == 0 { break }
            let block = UnsafeRawBufferPointer(rebasing: buffer[0..<filled])
            hasher.update(block)
            blocks.append(xxh3_64(block))
            try eachBlock(block)
            size += UInt64(filled)
            if filled < blockSize { break }
        }
        self.size = size
        self.whole = hasher.finalize()
        self.blocks = blocks
    }
}

extension Digest128 {
    /// xxh3-128 of a whole file, read sequentially in 4 MiB chunks.
    public static func ofFile(atPath path: String) throws(FileDigestError) -> Digest128 {
        try FileDigests(ofFile: path, blockSize: 4 << 20).whole
    }
}
