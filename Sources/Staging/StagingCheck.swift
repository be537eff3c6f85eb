import Foundation
import Integrity
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// A check of a whole staging directory, for start-up and for operators
/// (`weightcache verify`): every blob is hashed and one whose content does not
/// match its name is moved to `quarantine/` (never deleted: it is evidence) with
/// a log line; leftovers of crashes that no pull can resume are removed.
/// Partials with a block map are kept: the next pull of their model resumes them.
extension Staging {
    public struct CheckReport: Sendable, Equatable {
        public var blobsVerified = 0
        /// Paths under quarantine/ of blobs that failed.
        public var quarantined: [String] = []
        /// Orphans removed: partials without a map, maps without a partial, unfinished snapshots.
        public var removed: [String] = []
        /// Partials kept for the next pull to resume.
        public var resumable = 0
    }

    public func check(logger: Logger) throws(StagingError) -> CheckReport {
        try layout.prepare()
        var report = CheckReport()
        for name in try list(layout.blobs) where !name.hasPrefix(".") {
            let path = layout.blob(name)
            let actual: Digest128
            do { actual = try Digest128.ofFile(atPath: path) } catch {
                throw .localIO(syscall: error.syscall, path: error.path, errno: error.errno)
            }
            report.blobsVerified += 1
            guard actual.description != name else { continue }
            try makeDirectory(layout.quarantine)
            let moved = layout.quarantine + "/\(name).\(Int(Date().timeIntervalSince1970))"
            guard rename(path, moved) == 0 else { throw .localIO(syscall: "rename", path: moved, errno: errno) }
            logger.warning("quarantined blob \(name): its content hashes to \(actual); moved to \(moved)")
            report.quarantined.append(moved)
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
            unlink(layout.partials + "/" + name)
            report.removed.append(layout.partials + "/" + name)
        }
        // Snapshots and refs being written when a process died.
        if let walker = FileManager.default.enumerator(atPath: layout.root + "/models") {
            while let relative = walker.nextObject() as? String {
                guard (relative as NSString).lastPathComponent.hasPrefix(".tmp-") else { continue }
                let path = layout.root + "/models/" + relative
                try? FileManager.default.removeItem(atPath: path)
                walker.skipDescendants()
                report.removed.append(path)
            }
        }
        return report
    }

    private func list(_ directory: String) throws(StagingError) -> [String] {
        do { return try FileManager.default.contentsOfDirectory(atPath: directory).sorted() } catch {
            throw .localIO(syscall: "opendir", path: directory, errno: EIO)
        }
    }
}
