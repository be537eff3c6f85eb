// ParallelDownloader: one large object into one local file, fast.
//
// The object is cut into parts of `partSize` bytes; `concurrency` workers take
// the next part in order and ask the store to write it in place (pwrite at the
// part's offset), so the file fills roughly front to back and memory stays
// bounded by what is in flight, never by object size. Every part carries the
// object's ETag (If-Match): an object replaced mid-download fails loudly instead
// of yielding a file made of two versions. Retries happen per part, inside the
// store (see RetryPolicy), so one reset costs one part, not the whole object.
//
// The bytes land in `DEST.partial` beside the destination and are renamed into
// place only when every part is in: an interrupted download never leaves a
// file that looks complete.
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public struct ParallelDownloader: Sendable {
    public var partSize: UInt64
    public var concurrency: Int
    /// fsync before the rename: durable against power loss, at some cost.
    public var syncBeforeRename: Bool
    /// Average download rate cap of one transfer in bytes/s (0: none), paced
    /// part by part: keeps a background pull from starving serving traffic.
    public var maxBytesPerSecond: UInt64
    /// When set, parts in flight are capped across every download sharing
    /// these slots (several files of one pull), granted by `priority`.
    public var slots: PartSlots? = nil
    public var priority = 0

    /// Requests in flight when nobody says otherwise; the configuration's
    /// `transfer.concurrency` default (Config's `Transfer`) is the same 32,
    /// for the reason given there.
    public static let defaultConcurrency = 32

    public init(
        partSize: UInt64 = 8 << 20, concurrency: Int = defaultConcurrency, syncBeforeRename: Bool = false, maxBytesPerSecond: UInt64 = 0
    ) {
        self.partSize = max(1, partSize)
        self.concurrency = max(1, concurrency)
        self.syncBeforeRename = syncBeforeRename
        self.maxBytesPerSecond = maxBytesPerSecond
    }

    /// What a finished download did.
    public struct Result: Sendable, Equatable {
        public var object: ObjectInfo
        public var destination: String
        public var parts: Int
    }

    /// Downloads `key` from `store` to the file `destination`, replacing it.
    /// On failure nothing is left at `destination` or beside it.
    public func download(
        _ key: String, from store: some ObjectStore, to destination: String,
        progress: ProgressHandler? = nil
    ) async throws(ObjectStoreError) -> Result {
        let object = try await store.head(key)
        let partial = destination + ".partial"
        let file = try LocalFile(creatingForWriting: partial, size: object.size)
        var failure: ObjectStoreError? = nil
        do {
            try await fill(object, from: store, into: file.output, parts: Array(0..<partCount(object.size)), progress: progress)
            if syncBeforeRename { try file.sync() }
        } catch let error as ObjectStoreError {
            failure = error
        } catch {
            failure = .cancelled
        }
        file.close()
        if failure == nil && rename(partial, destination) != 0 {
            failure = .localIO(syscall: "rename", path: destination, errno: errno)
        }
        if let failure {
            unlink(partial)
            throw failure
        }
        return Result(object: object, destination: destination, parts: partCount(object.size))
    }

    /// How many parts an object of `size` bytes is cut into.
    public func partCount(_ size: UInt64) -> Int { Int((size + partSize - 1) / partSize) }

    /// The byte range of part `index` of an object of `size` bytes.
    public func range(ofPart index: Int, size: UInt64) -> Range<UInt64> {
        let start = UInt64(index) * partSize
        return start..<min(size, start + partSize)
    }

    /// Downloads the parts `parts` of `object` into `file`, each at its own
    /// offset. After a part lands, `landed(part, range)` runs (to verify or
    /// record it); its error, like a store's, cancels the rest and is thrown.
    /// The building block of resumable, verified pulls.
    public func fill(
        _ object: ObjectInfo, from store: some ObjectStore, into file: OutputFile, parts: [Int],
        progress: ProgressHandler?, landed: @escaping @Sendable (Int, Range<UInt64>) async throws -> Void = { _, _ in }
    ) async throws {
        try await run(parts: parts, cost: { range(ofPart: $0, size: object.size).count }) { part in
            let range = range(ofPart: part, size: object.size)
            try await store.download(
                object.key, range: range, into: file, at: range.lowerBound, ifMatch: object.etag, progress: progress)
            try await landed(part, range)
        }
    }

    /// Runs `body` for each of `parts`, `concurrency` at a time, in order, each
    /// paced by its `cost` in bytes when a rate cap is set. The first error
    /// cancels the rest and is thrown. The scheduling under `fill`, for callers
    /// that fetch parts their own way (lz4 frames).
    public func run(
        parts: [Int], cost: @escaping @Sendable (Int) -> Int, _ body: @escaping @Sendable (Int) async throws -> Void
    ) async throws {
        let pacer = maxBytesPerSecond > 0 ? Pacer(bytesPerSecond: maxBytesPerSecond) : nil
        let (slots, priority) = (self.slots, self.priority)
        _ = try await concurrentMap(count: parts.count, concurrency: concurrency) { slot in
            try await pacer?.reserve(cost(parts[slot]))
            try await slots?.acquire(priority: priority)
            defer { slots?.release() }
            try await body(parts[slot])
        }
    }
}
