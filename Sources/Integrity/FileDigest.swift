#if canImport(Glibc)
import Glibc
#endif

/// Why a file could not be hashed: the syscall, the path and errno.
public struct FileDigestError: Error, Equatable, CustomStringConvertible {
    public var syscall: String
    public var path: String
    public var errno: Int32

    public var description: String {
        "\(syscall)(\(path)): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

extension Digest128 {
    /// xxh3-128 of a whole file, read sequentially in 4 MiB chunks so memory
    /// stays flat whatever the file size. Blocks the calling thread.
    public static func ofFile(atPath path: String) throws(FileDigestError) -> Digest128 {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileDigestError(syscall: "open", path: path, errno: errno) }
        defer { close(fd) }
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)
        var hasher = Hasher128()
        let chunk = 4 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        while true {
            let n = read(fd, buffer.baseAddress, chunk)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileDigestError(syscall: "read", path: path, errno: errno)
            }
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
        return hasher.finalize()
    }
}
