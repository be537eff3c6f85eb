import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A file descriptor with the few calls the stores need, each translating errno
/// into `ObjectStoreError.localIO` at this edge. Not thread-safe to close while
/// in use; pread/pwrite from several threads at once are fine.
struct LocalFile: Sendable {
    let descriptor: Int32
    let path: String

    init(openForReading path: String) throws(ObjectStoreError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .localIO(syscall: "open", path: path, errno: errno) }
        self.descriptor = fd
        self.path = path
    }

    /// Creates (or truncates) `path` for writing, sized to `size` with space
    /// reserved up front, so that a full disk fails here and not mid-transfer.
    init(creatingForWriting path: String, size: UInt64) throws(ObjectStoreError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .localIO(syscall: "open", path: path, errno: errno) }
        self.descriptor = fd
        self.path = path
        if size > 0 {
            let result = posix_fallocate(fd, 0, off_t(size))
            // EOPNOTSUPP/EINVAL: a filesystem without fallocate; ftruncate instead.
            if result != 0 && result != EOPNOTSUPP && result != EINVAL {
                Glibc.close(fd)
                throw .localIO(syscall: "posix_fallocate", path: path, errno: result)
            }
            if result != 0 && ftruncate(fd, off_t(size)) != 0 {
                let e = errno
                Glibc.close(fd)
                throw .localIO(syscall: "ftruncate", path: path, errno: e)
            }
        }
    }

    var output: OutputFile { OutputFile(descriptor: descriptor, path: path) }

    func size() throws(ObjectStoreError) -> UInt64 {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else { throw .localIO(syscall: "fstat", path: path, errno: errno) }
        return UInt64(info.st_size)
    }

    /// Exactly the bytes of `range`; a file shorter than that is an error.
    func read(_ range: Range<UInt64>) throws(ObjectStoreError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Int(range.count))
        var failure: ObjectStoreError?
        bytes.withUnsafeMutableBytes { buffer in
            do throws(ObjectStoreError) { try read(at: range.lowerBound, into: buffer) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Fills `buffer` with the bytes at `offset`; a file shorter than that is an error.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(ObjectStoreError) {
        var done = 0
        while done < buffer.count {
            let n = pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .localIO(syscall: "pread", path: path, errno: n == 0 ? EIO : errno) }
            done += n
        }
    }

    func sync() throws(ObjectStoreError) {
        guard fsync(descriptor) == 0 else { throw .localIO(syscall: "fsync", path: path, errno: errno) }
    }

    func close() {
        _ = Glibc.close(descriptor)
    }
}

/// Runs blocking work (file I/O) on a Dispatch worker, keeping it off Swift's
/// cooperative pool, which has one thread per core.
func onWorkerThread<T: Sendable>(
    _ work: @escaping @Sendable () throws(ObjectStoreError) -> T
) async throws(ObjectStoreError) -> T {
    let result: Result<T, ObjectStoreError> = await withCheckedContinuation { continuation in
        DispatchQueue.global().async {
            do throws(ObjectStoreError) { continuation.resume(returning: .success(try work())) }
            catch { continuation.resume(returning: .failure(error)) }
        }
    }
    return try result.get()
}
