import Foundation
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Per-block xxh3-64s collected while parts land, from any worker.
final class BlockDigests: Sendable {
    private let values: Mutex<[UInt64]>

    init(count: Int) { values = Mutex(Array(repeating: 0, count: count)) }

    func set(_ block: Int, _ digest: UInt64) { values.withLock { $0[block] = digest } }
    var all: [UInt64] { values.withLock { $0 } }
}

/// `digests/<blob>`: the block size (8 bytes, little-endian) then one
/// little-endian xxh3-64 per block. Written before the blob is published;
/// read by whoever verifies blocks of the blob later (the RAM tier).
public struct BlockDigestFile: Sendable, Equatable {
    public var blockSize: Int
    public var digests: [UInt64]

    public init(blockSize: Int, digests: [UInt64]) {
        self.blockSize = blockSize
        self.digests = digests
    }

    func write(to path: String) throws(StagingError) {
        var bytes = [UInt8]()
        bytes.reserveCapacity(8 * (digests.count + 1))
        for value in [UInt64(blockSize)] + digests {
            withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
        }
        let temporary = path + ".tmp-\(UUID().uuidString)"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(bytes)) else {
            throw .localIO(syscall: "create", path: temporary, errno: errno)
        }
        guard rename(temporary, path) == 0 else {
            let e = errno
            unlink(temporary)
            throw .localIO(syscall: "rename", path: path, errno: e)
        }
    }

    /// True when there is one digest per block of a file of `size` bytes.
    func fits(size: UInt64?) -> Bool {
        guard let size else { return false }
        return UInt64(digests.count) == (size + UInt64(blockSize) - 1) / UInt64(blockSize)
    }

    static func read(from path: String) -> BlockDigestFile? {
        guard let data = FileManager.default.contents(atPath: path), data.count >= 8, data.count % 8 == 0 else { return nil }
        let values = data.withUnsafeBytes { raw in
            (0..<data.count / 8).map { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self)) }
        }
        guard let size = values.first, size > 0, size <= 1 << 30 else { return nil }
        return BlockDigestFile(blockSize: Int(size), digests: Array(values.dropFirst()))
    }
}

extension Staging {
    /// A staged blob as the RAM tier reads it: its path, size and block digests.
    public func stagedBlob(_ digest: String) throws(StagingError) -> (path: String, size: UInt64, digests: BlockDigestFile) {
        let path = layout.blob(digest)
        var info = stat()
        guard stat(path, &info) == 0, let digests = BlockDigestFile.read(from: layout.blockDigests(digest)) else {
            throw .notStaged(model: "blob \(digest)")
        }
        return (path, UInt64(info.st_size), digests)
    }

    /// Moves a blob that failed a check to quarantine/ (never deleted: it is
    /// evidence) with a log line; a later pull fetches it again.
    @discardableResult
    public func quarantine(blob digest: String, reason: String, logger: Logger) throws(StagingError) -> String {
        try makeDirectory(layout.quarantine)
        // Never over earlier evidence: two quarantines of one blob in one second get -1, -2, ...
        let stamp = layout.quarantine + "/\(digest).\(Int(Date().timeIntervalSince1970))"
        var moved = stamp
        var twin = 0
        while fileExists(moved) {
            twin += 1
            moved = stamp + "-\(twin)"
        }
        guard rename(layout.blob(digest), moved) == 0 else { throw .localIO(syscall: "rename", path: moved, errno: errno) }
        unlink(layout.blockDigests(digest))
        UnsyncedMarkers(layout: layout).clear(digest)
        logger.warning("quarantined blob \(digest): \(reason); moved to \(moved)")
        return moved
    }
}

