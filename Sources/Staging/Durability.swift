import Foundation
import Integrity
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// When a pulled blob's bytes must be on disk.
///
/// `immediate`: the partial is fsynced before it is renamed into blobs/, so a
/// pull that returned survives a power cut. On this class of machine that
/// fsync is the pull's bottleneck (the disk syncs ~500 MB/s while the network
/// delivers more), and none of the tools people compare us with pays it.
///
/// `deferred` (the default): a verified blob is published as soon as its bytes
/// are in the page cache, with a marker `unsynced/<digest>` that holds the
/// kernel's boot id; the marker itself is made durable *before* the rename.
/// `settle` later fsyncs the blob and removes the marker. Bytes in the page
/// cache are only lost with the kernel (power cut, panic, reboot), and every
/// one of those changes the boot id, so: a marker from this boot means the
/// blob is exactly what was verified (a process crash loses nothing), and a
/// marker from another boot means its bytes may never have reached the disk,
/// so the blob is hashed again before anything serves it and quarantined if
/// it does not match. Nothing unverified is served either way.
public enum Durability: String, Sendable, CaseIterable {
    case immediate
    case deferred
}

/// The running kernel's boot id (`/proc/sys/kernel/random/boot_id`): new on
/// every boot, so page-cache contents cannot outlive it. nil where unreadable,
/// in which case pulls fall back to `immediate`.
enum BootID {
    static func current() -> String? {
        guard let text = try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8) else { return nil }
        let id = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return id.isEmpty ? nil : id
    }
}

/// The `unsynced/` markers of blobs published under `deferred` durability.
struct UnsyncedMarkers: Sendable {
    let layout: StagingLayout

    var directory: String { layout.root + "/unsynced" }
    func marker(_ digest: String) -> String { directory + "/" + digest }

    /// Records that `digest` is about to be published unsynced, durably:
    /// written, fsynced, and its directory entry fsynced, so that no rename of
    /// the blob can reach the disk before its marker does.
    func mark(_ digest: String, bootID: String) throws(StagingError) {
        try makeDirectory(directory)
        let path = marker(digest)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .localIO(syscall: "open", path: path, errno: errno) }
        defer { close(fd) }
        let text = Array((bootID + "\n").utf8)
        let written = text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == text.count else { throw .localIO(syscall: "write", path: path, errno: written < 0 ? errno : EIO) }
        guard fsync(fd) == 0 else { throw .localIO(syscall: "fsync", path: path, errno: errno) }
        syncDirectory(directory)
    }

    /// The boot id a marker recorded; nil if there is no marker, "" if it is unreadable.
    func bootID(of digest: String) -> String? {
        guard let data = FileManager.default.contents(atPath: marker(digest)) else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func clear(_ digest: String) { unlink(marker(digest)) }

    /// Digests with a marker.
    func all() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }
}

extension Staging {
    /// What `settle` did.
    public struct SettleReport: Sendable, Equatable {
        /// Blobs of this boot fsynced and marked durable.
        public var synced = 0
        /// Blobs published before the last reboot, hashed again and found intact.
        public var reverified: [String] = []
        /// quarantine/ paths of blobs from before the reboot that did not match.
        public var quarantined: [String] = []
        /// Markers of blobs that are gone (evicted, or a pull that died before its rename).
        public var cleared = 0
        /// Blobs still unsynced (their pull has not published them yet).
        public var pending = 0

        public init() {}
    }

    /// Makes every blob published under `deferred` durability durable: one
    /// from this boot is fsynced (with its block digests); one from an earlier
    /// boot is hashed again, block by block and whole, and quarantined if it
    /// does not match its name. Cheap when nothing is pending: one readdir.
    /// Safe beside live pulls: a marker whose blob is not there yet is left
    /// alone unless it is older than `staleAfter`.
    @discardableResult
    public func settle(logger: Logger, staleAfter: TimeInterval = 600) throws(StagingError) -> SettleReport {
        let markers = UnsyncedMarkers(layout: layout)
        var report = SettleReport()
        let now = BootID.current()
        for digest in markers.all() {
            guard let recorded = markers.bootID(of: digest) else { continue }
            let path = layout.blob(digest)
            guard fileExists(path) else {
                if age(markers.marker(digest)) > staleAfter {
                    markers.clear(digest)
                    report.cleared += 1
                } else {
                    report.pending += 1
                }
                continue
            }
            if let now, recorded == now {
                try syncFile(path)
                try? syncFile(layout.blockDigests(digest))
                syncDirectory(layout.blobs)
                markers.clear(digest)
                report.synced += 1
                continue
            }
            // Published before a reboot: its bytes may never have reached the disk.
            let recordedDigests = BlockDigestFile.read(from: layout.blockDigests(digest))
            let blockSize = recordedDigests?.blockSize ?? (4 << 20)
            let computed: FileDigests
            do { computed = try FileDigests(ofFile: path, blockSize: blockSize) } catch {
                throw .localIO(syscall: error.syscall, path: error.path, errno: error.errno)
            }
            if computed.whole.description == digest {
                if recordedDigests?.digests != computed.blocks {
                    try BlockDigestFile(blockSize: blockSize, digests: computed.blocks).write(to: layout.blockDigests(digest))
                }
                markers.clear(digest)
                report.reverified.append(digest)
            } else {
                report.quarantined.append(try quarantine(
                    blob: digest, reason: "published unsynced before a reboot and its content now hashes to \(computed.whole)",
                    logger: logger))
            }
        }
        if report.synced + report.reverified.count + report.quarantined.count > 0 {
            logger.info(
                "settled staged blobs: \(report.synced) synced, \(report.reverified.count) re-verified after a reboot, \(report.quarantined.count) quarantined")
        }
        return report
    }

    private func age(_ path: String) -> TimeInterval {
        var info = stat()
        guard stat(path, &info) == 0 else { return .infinity }
        return Date().timeIntervalSince1970 - TimeInterval(info.st_mtim.tv_sec)
    }
}

/// fsync of a file by path (a read-only descriptor is enough on Linux).
func syncFile(_ path: String) throws(StagingError) {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .localIO(syscall: "open", path: path, errno: errno) }
    defer { close(fd) }
    guard fsync(fd) == 0 else { throw .localIO(syscall: "fsync", path: path, errno: errno) }
}
