import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Zero-copy pins. Clients that `open` a staged file map it themselves,
/// through the page cache, which the kernel may reclaim under pressure; a
/// pinned model is kept resident for them by mapping its staged files here
/// and locking the pages (mmap + mlock): every client mapping shares those
/// pages, and they cannot be reclaimed. Bounded by `ramCache.lockBytes`; a
/// blob shared by two pinned models is locked once and released when the
/// last of them is unpinned. Thread-safe.
final class PageLocks: @unchecked Sendable {
    let limit: UInt64
    private let logger: Logger
    private let lock = NSLock()
    private var mapped: [String: (address: UnsafeMutableRawPointer, size: Int, holders: Set<String>)] = [:]
    private var lockedBytes: UInt64 = 0

    init(limit: UInt64, logger: Logger) {
        self.limit = limit
        self.logger = logger
    }

    deinit {
        for entry in mapped.values {
            munlock(entry.address, entry.size)
            munmap(entry.address, entry.size)
        }
    }

    var total: UInt64 { lock.withLock { lockedBytes } }

    /// Locks the pages of `blobs` (digest, path, size) for `model`, all or
    /// none: false (and nothing locked) if they would exceed the limit or a
    /// lock fails (RLIMIT_MEMLOCK).
    func lockPages(of model: String, blobs: [(digest: String, path: String, size: UInt64)]) -> Bool {
        guard limit > 0 else { return false }
        lock.lock()
        defer { lock.unlock() }
        let needed = blobs.filter { mapped[$0.digest] == nil }.reduce(UInt64(0)) { $0 + $1.size }
        guard lockedBytes + needed <= limit else {
            logger.notice("not locking \(model) in memory: \(needed) more bytes would pass ramCache.lockBytes (\(limit))")
            return false
        }
        var added: [String] = []
        for blob in blobs {
            if mapped[blob.digest] != nil {
                mapped[blob.digest]!.holders.insert(model)
                continue
            }
            guard blob.size > 0 else { continue }
            let fd = open(blob.path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return undo(added, model, "open(\(blob.path)): errno \(errno)") }
            let address = mmap(nil, Int(blob.size), PROT_READ, MAP_SHARED, fd, 0)
            close(fd)  // the mapping keeps the file
            guard let address, address != MAP_FAILED else { return undo(added, model, "mmap(\(blob.path)): errno \(errno)") }
            guard mlock(address, Int(blob.size)) == 0 else {
                let e = errno
                munmap(address, Int(blob.size))
                return undo(added, model, "mlock of \(blob.size) bytes: errno \(e) (raise RLIMIT_MEMLOCK, e.g. LimitMEMLOCK=infinity)")
            }
            mapped[blob.digest] = (address, Int(blob.size), [model])
            lockedBytes += blob.size
            added.append(blob.digest)
        }
        logger.info("locked \(model) in memory: \(lockedBytes) of \(limit) lock bytes in use")
        return true
    }

    /// Releases `model`'s hold; pages no other model holds are unlocked.
    func unlockPages(of model: String) {
        lock.lock()
        defer { lock.unlock() }
        for (digest, entry) in mapped where entry.holders.contains(model) {
            mapped[digest]!.holders.remove(model)
            if mapped[digest]!.holders.isEmpty { release(digest) }
        }
    }

    /// Under the lock: undoes a partial lockPages.
    private func undo(_ added: [String], _ model: String, _ reason: String) -> Bool {
        for digest in added { release(digest) }
        for digest in mapped.keys { mapped[digest]!.holders.remove(model) }
        logger.warning("could not lock \(model) in memory: \(reason)")
        return false
    }

    private func release(_ digest: String) {
        guard let entry = mapped.removeValue(forKey: digest) else { return }
        munlock(entry.address, entry.size)
        munmap(entry.address, entry.size)
        lockedBytes -= UInt64(entry.size)
    }
}
