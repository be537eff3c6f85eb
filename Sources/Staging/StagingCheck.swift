import Foundation
import Integrity
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// A check of a whole staging directory, for operators (`weightcache verify`,
/// `.full`) and for the daemon's start (`.quick`): blobs are hashed and one
/// whose content does not match its name is moved to `quarantine/` (never
/// deleted: it is evidence) with a log line; leftovers of crashes that no pull
/// can resume are removed. Partials with a block map are kept: the next pull
/// of their model resumes them.
///
/// `.full` hashes every blob. `.quick` hashes only what cannot be trusted
/// without it: blobs published unsynced before a reboot (`settle`) and blobs
/// whose block digests are missing or do not fit their size. A quick check of
/// 500 GB of staged models takes a readdir, not the half hour a full re-hash
/// does; the RAM tier checks every block it loads against its digest anyway.
extension Staging {
    public enum CheckScope: Sendable {
        case full
        case quick
    }

    public struct CheckReport: Sendable, Equatable {
        public var blobsVerified = 0
        /// Blobs a quick check trusted without hashing (their digests fit).
        public var blobsTrusted = 0
        /// What settling unsynced blobs did (see `Durability`).
        public var settled = SettleReport()
        /// Paths under quarantine/ of blobs that failed.
        public var quarantined: [String] = []
        /// Orphans removed: partials without a map, maps without a partial, unfinished snapshots.
        public var removed: [String] = []
        /// Partials kept for the next pull to resume.
        public var resumable = 0
    }

    public func check(logger: Logger, scope: CheckScope = .full) throws(StagingError) -> CheckReport {
        try layout.prepare()
        var report = CheckReport()
        // Unsynced blobs first: those from before a reboot are hashed here.
        report.settled = try settle(logger: logger)
        report.quarantined = report.settled.quarantined
        let reverified = Set(report.settled.reverified)
        report.blobsVerified = reverified.count
        for name in try list(layout.blobs) where !name.hasPrefix(".") && !reverified.contains(name) {
            let path = layout.blob(name)
            let recorded = BlockDigestFile.read(from: layout.blockDigests(name))
            if scope == .quick, let recorded, recorded.fits(size: fileSize(path)) {
                report.blobsTrusted += 1
                continue
            }
            let computed: FileDigests
            do { computed = try FileDigests(ofFile: path, blockSize: recorded?.blockSize ?? (4 << 20)) } catch {
                throw .localIO(syscall: error.syscall, path: error.path, errno: error.errno)
            }
            let actual = computed.whole
            report.blobsVerified += 1
            if actual.description == name {
                // A good blob whose block digests are missing or stale gets them rewritten.
                if recorded?.digests != computed.blocks {
                    try BlockDigestFile(blockSize: recorded?.blockSize ?? (4 << 20), digests: computed.blocks)
                        .write(to: layout.blockDigests(name))
                }
                continue
            }
            report.quarantined.append(
                try quarantine(blob: name, reason: "its content hashes to \(actual)", logger: logger))
        }
        for name in try list(layout.root + "/digests") where !fileExists(layout.blob(name)) {
            // A pull that holds the blob's lock writes its digests just before the blob.
            guard let lock = BlobLock.tryAcquire(layout.lock(name)) else { continue }
            defer { withExtendedLifetime(lock) {} }
            guard !fileExists(layout.blob(name)) else { continue }
            unlink(layout.blockDigests(name))
            report.removed.append(layout.blockDigests(name))
        }
        // Lock files left by versions that did not unlink them on release
        // (a free lock is removed as soon as it is taken and let go).
        for name in try list(layout.locks) where name.hasSuffix(".lock") {
            _ = BlobLock.tryAcquire(layout.locks + "/" + name)
        }
        let partials = try list(layout.partials)
        for name in partials {
            let base = name.hasSuffix(".partial") ? String(name.dropLast(8)) : name.hasSuffix(".blocks") ? String(name.dropLast(7)) : nil
            guard let base else { continue }
            let twin = name.hasSuffix(".partial") ? base + ".blocks" : base + ".partial"
            if partials.contains(twin) {
                if name.hasSuffix(".partial") { report.resumable += 1 }
                continue
            }
            // A pull (this process's or another's) that holds the lock is creating it right now.
            guard let lock = BlobLock.tryAcquire(layout.lock(base)) else { continue }
            defer { withExtendedLifetime(lock) {} }
            unlink(layout.partials + "/" + name)
            report.removed.append(layout.partials + "/" + name)
        }
        // Snapshots and refs being written when a process died (not those a
        // live pull is writing now: they are seconds old, these are not).
        if let walker = FileManager.default.enumerator(atPath: layout.root + "/models") {
            while let relative = walker.nextObject() as? String {
                guard (relative as NSString).lastPathComponent.hasPrefix(".tmp-") else { continue }
                let path = layout.root + "/models/" + relative
                let modified = (walker.fileAttributes?[.modificationDate] as? Date) ?? .distantPast
                guard Date().timeIntervalSince(modified) > 600 else { continue }
                try? FileManager.default.removeItem(atPath: path)
                walker.skipDescendants()
                report.removed.append(path)
            }
        }
        return report
    }

    private func fileSize(_ path: String) -> UInt64? {
        var info = stat()
        return stat(path, &info) == 0 ? UInt64(info.st_size) : nil
    }

    private func list(_ directory: String) throws(StagingError) -> [String] {
        do { return try FileManager.default.contentsOfDirectory(atPath: directory).sorted() } catch {
            throw .localIO(syscall: "opendir", path: directory, errno: EIO)
        }
    }
}
