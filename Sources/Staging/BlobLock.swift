import Dispatch

#if canImport(Glibc)
import Glibc
#endif

/// An exclusive flock on `locks/<id>.lock`: held by whoever downloads a blob,
/// so that one download runs per blob however many pulls (threads, the daemon,
/// CLIs) ask for it. The kernel drops it when its holder dies, kill -9 included.
/// Opened read-only (flock needs no more), so a held lock never keeps the
/// filesystem from being remounted read-only.
///
/// Lock files do not pile up: the holder unlinks the file before it lets go,
/// and whoever gets a lock checks that the path still names the file it
/// locked (else it locked a file already unlinked, and tries again on the
/// current one). A lock file exists only while someone holds or awaits it.
final class BlobLock: Sendable {
    private let descriptor: Int32
    private let path: String

    private init(descriptor: Int32, path: String) {
        self.descriptor = descriptor
        self.path = path
    }

    /// Waits (on a Dispatch worker, not the cooperative pool) until the lock is ours.
    static func acquire(_ path: String) async throws(StagingError) -> BlobLock {
        let result: Result<BlobLock, StagingError> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: lock(path, wait: true).flatMap { lock in
                    lock.map { .success($0) } ?? .failure(.localIO(syscall: "flock", path: path, errno: EWOULDBLOCK))
                })
            }
        }
        return try result.get()
    }

    /// The lock if nobody holds it now, else nil; never waits.
    static func tryAcquire(_ path: String) -> BlobLock? {
        (try? lock(path, wait: false).get()) ?? nil
    }

    private static func lock(_ path: String, wait: Bool) -> Result<BlobLock?, StagingError> {
        while true {
            let fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0o644)
            guard fd >= 0 else { return .failure(.localIO(syscall: "open", path: path, errno: errno)) }
            while flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0 {
                if errno == EINTR { continue }
                let e = errno
                close(fd)
                return e == EWOULDBLOCK && !wait ? .success(nil) : .failure(.localIO(syscall: "flock", path: path, errno: e))
            }
            // The previous holder may have unlinked the file while we waited.
            var held = stat()
            var named = stat()
            if fstat(fd, &held) == 0, stat(path, &named) == 0, held.st_dev == named.st_dev, held.st_ino == named.st_ino {
                return .success(BlobLock(descriptor: fd, path: path))
            }
            close(fd)
        }
    }

    deinit {
        unlink(path)  // ours while we hold it; waiters on it retry on a new file
        close(descriptor)  // closing the last descriptor releases the flock
    }
}

/// Held by `weightcache serve` for as long as it runs (`staging/daemon.lock`):
/// one daemon per staging directory. A second daemon fails before touching
/// anything, and maintenance (`verify`) can tell that a daemon is live.
public final class StagingClaim: Sendable {
    private let lock: BlobLock

    fileprivate init(lock: BlobLock) { self.lock = lock }
}

extension Staging {
    private var claimPath: String { layout.root + "/daemon.lock" }

    /// The claim, or nil when a live daemon holds it already.
    public func claimForDaemon() throws(StagingError) -> StagingClaim? {
        try makeDirectory(layout.root)
        return BlobLock.tryAcquire(claimPath).map(StagingClaim.init)
    }

    /// Whether a live daemon holds this staging directory.
    public var isClaimedByDaemon: Bool {
        guard fileExists(claimPath) else { return false }
        return BlobLock.tryAcquire(claimPath) == nil
    }
}
