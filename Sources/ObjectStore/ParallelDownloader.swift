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

    public init(partSize: UInt64 = 8 << 20, concurrency: Int = 8, syncBeforeRename: Bool = false) {
        self.partSize = max(1, partSize)
        self.concurrency = max(1, concurrency)
        self.syncBeforeRename = syncBeforeRename
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
        let parts = Int((object.size + partSize - 1) / partSize)
        var failure: ObjectStoreError? = nil
        do throws(ObjectStoreError) {
            _ = try await concurrentMap(count: parts, concurrency: concurrency) { index throws(ObjectStoreError) in
                let start = UInt64(index) * partSize
                let range = start..<min(object.size, start + partSize)
                try await store.download(
                    key, range: range, into: file.output, at: start, ifMatch: object.etag, progress: progress)
            }
            if syncBeforeRename { try file.sync() }
        } catch { failure = error }
        file.close()
        if failure == nil && rename(partial, destination) != 0 {
            failure = .localIO(syscall: "rename", path: destination, errno: errno)
        }
        if let failure {
            unlink(partial)
            throw failure
        }
        return Result(object: object, destination: destination, parts: parts)
    }
}
