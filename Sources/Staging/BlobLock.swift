import Dispatch

#if canImport(Glibc)
import Glibc
#endif

/// An exclusive flock on `locks/<id>.lock`: held by whoever downloads a blob,
/// so that one download runs per blob however many pulls (threads, the daemon,
/// CLIs) ask for it. The kernel drops it when its holder dies, kill -9 included.
/// Opened read-only (flock needs no more), so a held lock never keeps the
/// filesystem from being remounted read-only.
final class BlobLock: Sendable {
    private let descriptor: Int32

    private init(descriptor: Int32) { self.descriptor = descriptor }

    /// Waits (on a Dispatch worker, not the cooperative pool) until the lock is ours.
    static func acquire(_ path: String) async throws(StagingError) -> BlobLock {
        let result: Result<BlobLock, StagingError> = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                let fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0o644)
                guard fd >= 0 else {
                    return continuation.resume(returning: .failure(.localIO(syscall: "open", path: path, errno: errno)))
                }
                while flock(fd, LOCK_EX) != 0 {
                    if errno == EINTR { continue }
                    let e = errno
                    close(fd)
                    return continuation.resume(returning: .failure(.localIO(syscall: "flock", path: path, errno: e)))
                }
                continuation.resume(returning: .success(BlobLock(descriptor: fd)))
            }
        }
        return try result.get()
    }

    /// The lock if nobody holds it now, else nil; never waits.
    static func tryAcquire(_ path: String) -> BlobLock? {
        let fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return nil }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            return nil
        }
        return BlobLock(descriptor: fd)
    }

    deinit { close(descriptor) }  // closing the last descriptor releases the flock
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
