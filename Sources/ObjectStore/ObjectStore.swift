// ObjectStore: where model bytes come from.
//
// The source of truth is an object store: S3 or anything that speaks its API
// (SeaweedFS, MinIO, Ceph RGW), or a plain directory (`file://`, a local or
// network filesystem). Both sit behind `ObjectStore`, a bucket-like namespace of
// keys, so that staging and the CLI never know which one they talk to.
//
// The protocol is deliberately small: what a cache needs (head, ranged reads,
// ranged reads straight into a file, listing) plus what publishing needs (put,
// upload of a large file, delete). Large objects are read by
// `ParallelDownloader`, which cuts them into parts and asks the store for each
// part in parallel; the store decides how (S3: ranged GETs over libcurl's multi
// interface; file: pread/pwrite on a worker thread).
//
// Every error a store throws is an `ObjectStoreError`.

/// What a store knows of one object.
public struct ObjectInfo: Sendable, Equatable {
    /// The key, relative to the store's root (bucket or directory).
    public var key: String
    public var size: UInt64
    /// An opaque version tag (S3's ETag, quotes included). Reads of parts of one
    /// object pass it back so that an object replaced mid-download is caught.
    public var etag: String?

    public init(key: String, size: UInt64, etag: String? = nil) {
        self.key = key
        self.size = size
        self.etag = etag
    }
}

/// A file that downloaded bytes are written into with `pwrite`. The caller owns
/// the descriptor and keeps it open for the duration of the call.
public struct OutputFile: Sendable {
    public var descriptor: Int32
    /// For error messages only.
    public var path: String
    /// Sees the bytes as they are written (see `WriteObserver`).
    public var observer: (any WriteObserver)?
    /// Writes with O_DIRECT off the receiving thread, where the store
    /// supports it (the S3 store does; see `DirectWriter`). The observer
    /// then sees the bytes on a writer thread.
    public var directWriter: DirectWriter?

    public init(
        descriptor: Int32, path: String, observer: (any WriteObserver)? = nil, directWriter: DirectWriter? = nil
    ) {
        self.descriptor = descriptor
        self.path = path
        self.observer = observer
        self.directWriter = directWriter
    }
}

/// Caller-owned memory that a read fills in place (`ObjectStore.read(_:range:into:)`).
/// The caller keeps it valid, and touches it not, until the call returns.
public struct MemoryTarget: @unchecked Sendable {
    public let buffer: UnsafeMutableRawBufferPointer
    public init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }
}

/// Sees every byte a download writes into an `OutputFile`, right after it was
/// written, with its offset in the file: lets the caller hash what lands while
/// it is still in the CPU cache instead of reading it back from the file. One
/// `download` call writes its range front to back; a retry of it starts again
/// at the range's first byte. Called on the store's I/O thread: keep it cheap.
public protocol WriteObserver: Sendable {
    func wrote(_ bytes: UnsafeRawBufferPointer, at offset: UInt64)
}

/// Called with the number of bytes that landed since the last call; negative
/// when a failed attempt's bytes are discarded before a retry. May be called
/// from any thread, concurrently: keep it cheap and thread-safe.
public typealias ProgressHandler = @Sendable (Int64) -> Void

/// A namespace of objects: an S3 bucket or a directory.
///
/// All methods are safe to call concurrently and throw `ObjectStoreError`.
/// Range semantics are those of an HTTP range on an object of size N:
/// an empty range returns no bytes without touching the store; a range that
/// starts at or past N is `invalidRange`; a range that ends past N is clipped.
public protocol ObjectStore: Sendable {
    /// `s3://bucket` or `file:///dir`: names the store in messages.
    var name: String { get }

    /// Size and version of one object; `notFound` if there is none.
    func head(_ key: String) async throws(ObjectStoreError) -> ObjectInfo

    /// The bytes of `range` (the whole object when nil), held in memory.
    func get(_ key: String, range: Range<UInt64>?) async throws(ObjectStoreError) -> [UInt8]

    /// Reads exactly `range.count` bytes of `range` into `targets`, filling
    /// each in turn (their sizes add up to `range.count`), or throws: what a
    /// cache fills its own memory with — several blocks from one request, no
    /// array allocated and copied per read.
    func read(_ key: String, range: Range<UInt64>, into targets: [MemoryTarget]) async throws(ObjectStoreError)

    /// Writes the bytes of `range` into `file` at `offset`. Exactly
    /// `range.count` bytes are written or the call throws; memory use does not
    /// grow with the range. With `ifMatch`, a changed object is
    /// `preconditionFailed` rather than a mix of two versions.
    func download(
        _ key: String, range: Range<UInt64>, into file: OutputFile, at offset: UInt64,
        ifMatch etag: String?, progress: ProgressHandler?
    ) async throws(ObjectStoreError)

    /// Every object whose key starts with `prefix`, sorted by key.
    func list(prefix: String) async throws(ObjectStoreError) -> [ObjectInfo]

    /// Stores `bytes` as the whole object `key`, replacing any.
    func put(_ key: String, bytes: [UInt8]) async throws(ObjectStoreError)

    /// Stores the file at `path` as `key`; large files go in parallel parts
    /// (S3 multipart) and a failed upload leaves nothing behind.
    func upload(_ key: String, fromFile path: String, progress: ProgressHandler?) async throws(ObjectStoreError)

    /// Removes `key`; removing a key that does not exist is not an error.
    func delete(_ key: String) async throws(ObjectStoreError)
}

extension ObjectStore {
    public func get(_ key: String) async throws(ObjectStoreError) -> [UInt8] {
        try await get(key, range: nil)
    }

    /// By way of `get`, for stores that have nothing better (a copy per read).
    public func read(_ key: String, range: Range<UInt64>, into targets: [MemoryTarget]) async throws(ObjectStoreError) {
        precondition(targets.reduce(0) { $0 + $1.buffer.count } == range.count, "targets must add up to the range")
        let bytes = try await get(key, range: range)
        guard bytes.count == range.count else {
            throw .invalidResponse(
                ErrorContext(operation: "read", store: name, key: key, range: range),
                reason: "short read: \(bytes.count) of \(range.count) bytes")
        }
        bytes.withUnsafeBytes { source in
            var position = 0
            for target in targets {
                target.buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[position..<position + target.buffer.count]))
                position += target.buffer.count
            }
        }
    }
}
