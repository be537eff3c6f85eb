import BlockCache
import Compression
import Foundation
import Models
import ObjectStore
import Staging
import Wire

#if canImport(Glibc)
import Glibc
#endif

// The read path. Every byte a client gets went through the block cache, which
// checks each block against its xxh3-64 before anyone can read it, whatever
// loaded it: pread of a staged blob, or — while the file is not staged yet —
// a ranged GET of just that block from the store (read-through). A cold read
// therefore waits for its own blocks, not for the file, and it starts the
// pull of the model in the background so later reads come from NVMe.

/// Where a file's bytes come from, and its size.
struct ReadTarget {
    let source: BlobSource
    let size: UInt64

    /// The planned read of `length` bytes at `offset`, clipped to the file.
    func plan(offset: UInt64, length: UInt64, path: String) throws(DaemonError) -> ReadPlan {
        guard offset < size || (offset == 0 && size == 0) else {
            throw .invalidArgument("offset \(offset) is at or past the end of \(path) (\(size) bytes)")
        }
        return ReadPlan(source: source, range: offset..<offset + min(length, size - offset))
    }
}

/// A read the node has checked and knows where to serve from.
struct ReadPlan {
    let source: BlobSource
    /// The bytes to return: the asked range clipped to the file.
    let range: Range<UInt64>
}

extension Node {
    /// Where the bytes of a model's file come from.
    func target(model text: String, path: String) throws(DaemonError) -> ReadTarget {
        let model = try resolve(text: text)
        let file = try file(path, of: model)
        return ReadTarget(source: try source(of: file, in: model), size: file.size)
    }

    /// Checks a read (model, path, range) and finds where its bytes come from.
    func plan(model text: String, path: String, offset: UInt64, length: UInt64) throws(DaemonError) -> ReadPlan {
        try target(model: text, path: path).plan(offset: offset, length: length, path: path)
    }

    /// Hands the planned bytes to `body` in place, block by block (see
    /// `BlockCache.forEachBlock`). A staged blob that is gone (evicted, or
    /// deleted behind the daemon's back) or failed its check (flipped or
    /// truncated on disk: the cache has quarantined it) is planned again once,
    /// if nothing was handed over yet: its blocks then come from the store,
    /// verified against the manifest, and a pull stages it again.
    /// A read spanning several blocks has them all loaded (and checked) before
    /// the first byte is handed over, so that a bad block is recovered from —
    /// or reported as an error reply — instead of cutting a reply midway.
    func forEachBlock(
        _ plan: ReadPlan, model text: String, path: String, reader: Int, pipelined: Bool,
        _ body: (UnsafeRawBufferPointer) -> Bool
    ) throws(DaemonError) {
        var plan = plan
        let blockSize = UInt64(plan.source.blockSize)
        if plan.range.count > 0, plan.range.lowerBound / blockSize != (plan.range.upperBound - 1) / blockSize {
            plan = try loaded(plan, model: text, path: path)
        }
        var started = false
        do {
            try cache.forEachBlock(of: plan.source, in: plan.range, reader: reader, pipelined: pipelined) { piece in
                started = true
                return body(piece)
            }
        } catch {
            guard recoverable(error, plan), !started else { throw DaemonError(error) }
            let again = try replan(plan, after: error, model: text, path: path)
            do { try cache.forEachBlock(of: again.source, in: again.range, reader: reader, pipelined: pipelined, body) } catch {
                throw DaemonError(error)
            }
        }
    }

    /// The plan with every block of its range resident, planned again once if
    /// the staged copy turned out gone or bad.
    func loaded(_ plan: ReadPlan, model text: String, path: String) throws(DaemonError) -> ReadPlan {
        var current = plan
        for attempt in 0..<2 {
            let blockSize = UInt64(current.source.blockSize)
            do {
                // From the store, the absent blocks come in as few GETs as runs allow.
                let first = Int(current.range.lowerBound / blockSize)
                try cache.warm(current.source, blocks: first..<Int((current.range.upperBound - 1) / blockSize) + 1)
                return current
            } catch {
                guard attempt == 0, recoverable(error, current) else { throw DaemonError(error) }
                current = try replan(current, after: error, model: text, path: path)
            }
        }
        return current
    }

    /// A staged copy that is gone (evicted, deleted behind the daemon's back)
    /// or bad (flipped, truncated: the cache has quarantined it) can be read
    /// from the store instead; a bad block from the store cannot.
    private func recoverable(_ error: CacheError, _ plan: ReadPlan) -> Bool {
        switch error {
        case .system(_, _, ENOENT): true
        case .integrity: plan.source.path != nil
        default: false
        }
    }

    private func replan(_ plan: ReadPlan, after error: CacheError, model text: String, path: String) throws(DaemonError) -> ReadPlan {
        if case .integrity = error { logger.warning("serving \(text) \(path) from the store: \(error)") }
        lock.withLock { sources[plan.source.digest] = nil }
        changed()
        return try self.plan(model: text, path: path, offset: plan.range.lowerBound, length: UInt64(plan.range.count))
    }

    /// A read-only descriptor of the staged, verified blob of a file (pulling
    /// it first if needed), and its info. The caller sends and closes it.
    func open(model text: String, path: String) throws(DaemonError) -> (descriptor: Int32, info: FileInfo) {
        let reference = try Node.reference(text)
        var model = try resolve(reference)
        var file = try file(path, of: model)
        if file.digest.map({ staging.state(ofBlob: $0) }) != .staged {
            _ = try waitForPull(of: model)
            model = try resolve(reference, fresh: true)
            file = try self.file(path, of: model)
        }
        guard let digest = file.digest else { throw .internal("\(reference) \(path): no digest after its pull") }
        let blob = staging.layout.blob(digest)
        let fd = Glibc.open(blob, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw errno == ENOENT ? .notFound("\(reference) \(path) was evicted from staging just now; retry") : .internal("open(\(blob)): errno \(errno)")
        }
        return (fd, info(file))
    }

    /// What the cache reads a file from: the staged blob if there is one, else
    /// the store block by block (which needs the manifest's block digests;
    /// a model without a manifest is pulled, and verified, first).
    func source(of file: ResolvedFile, in model: ResolvedModel) throws(DaemonError) -> BlobSource {
        var source = try blockSource(of: file, in: model)
        if source.tensors == nil, file.path.hasSuffix(".safetensors") {
            source.tensors = tensorIndex(of: source)
            if source.path != nil, source.tensors != nil { lock.withLock { sources[source.digest] = source } }
        }
        return source
    }

    private func blockSource(of file: ResolvedFile, in model: ResolvedModel) throws(DaemonError) -> BlobSource {
        if let digest = file.digest, let known = lock.withLock({ sources[digest] }) { return known }
        if let digest = file.digest, let staged = stagedSource(digest, size: file.size) { return staged }
        if let digest = file.digest, let blocks = file.blockDigests, let entry = file.entry {
            startPull(of: model, afterReaders: true)
            var source = BlobSource(
                digest: digest, origin: .remote(remoteFetch(entry, of: model)), size: file.size,
                blockSize: model.blockSize, blockDigests: blocks)
            source.fetchRun = remoteFetchRun(entry, of: model)
            return source
        }
        // No digests to check a remote block against: only a verified pull will do.
        _ = try waitForPull(of: model)
        let again = try self.file(file.path, of: try resolve(model.reference, fresh: true))
        guard let digest = again.digest, let staged = stagedSource(digest, size: again.size) else {
            throw .notFound("\(model.reference) \(file.path) is not staged after its pull")
        }
        return staged
    }

    /// The tensor layout of a safetensors blob, read once (through the cache,
    /// so verified) and remembered; nil if the header does not parse (the
    /// file is then read with block read-ahead only).
    private func tensorIndex(of source: BlobSource) -> SafetensorsIndex? {
        if let known = lock.withLock({ tensorIndexes[source.digest] }) { return known }
        var index: SafetensorsIndex?
        if source.size >= 8, let first = try? cache.read(source, range: 0..<8),
            let length = try? SafetensorsIndex.headerLength(first), UInt64(8 + length) <= source.size,
            let header = try? cache.read(source, range: 0..<UInt64(8 + length))
        {
            index = try? SafetensorsIndex(header: header, fileSize: source.size)
        }
        lock.withLock {
            if tensorIndexes.count > 1024 { tensorIndexes.removeAll() }
            tensorIndexes[source.digest] = .some(index)
        }
        return index
    }

    /// A staged blob with its recorded block digests, remembered. One that is
    /// not the size the model says was truncated (or grown) behind our back:
    /// it is quarantined and nil returned (the store serves the file).
    private func stagedSource(_ digest: String, size: UInt64) -> BlobSource? {
        guard let staged = try? staging.stagedBlob(digest) else { return nil }
        guard staged.size == size else {
            _ = try? staging.quarantine(
                blob: digest, reason: "it is \(staged.size) bytes where its model says \(size)", logger: logger)
            return nil
        }
        let source = BlobSource(
            digest: digest, path: staged.path, size: staged.size, blockSize: staged.digests.blockSize,
            blockDigests: staged.digests.digests)
        lock.withLock { sources[digest] = source }
        changed()
        return source
    }

    /// Fetches one block of an unstaged file from the store: a ranged GET of
    /// the block (raw), or of its frame, decoded (lz4). The cache checks it.
    func remoteFetch(_ entry: Manifest.File, of model: ResolvedModel) -> BlobSource.Fetch {
        let store = repository.store
        let key = repository.key(of: entry, in: model.reference)
        let blockSize = UInt64(model.blockSize)
        let size = entry.size
        // offsets[i]: where frame i starts in the stored object.
        var offsets: [UInt64] = [0]
        for frame in entry.frames ?? [] { offsets.append(offsets.last! + frame) }
        let frameOffsets = offsets
        let digest = entry.xxh3_128 ?? entry.path
        let fetchRaw = rawFetcher(entry, of: model)
        let slots = transferSlots
        let activity = readThrough
        return { (block: Int, target: UnsafeMutableRawBufferPointer) throws(CacheError) -> Void in
            let compressed = entry.encoding == .lz4
            let range: Range<UInt64> =
                compressed
                ? frameOffsets[block]..<frameOffsets[block + 1]
                : UInt64(block) * blockSize..<min(size, UInt64(block + 1) * blockSize)
            if !compressed {
                guard target.count >= Int(range.count) else {
                    throw .origin(blob: digest, block: block, reason: "block of \(range.count) bytes into a \(target.count)-byte slot")
                }
                try fetchRaw(range, [UnsafeMutableRawBufferPointer(rebasing: target[0..<Int(range.count)])], block, Self.readerPriority)
                return
            }
            let bytes = try Self.fromStore(activity, slots, blob: digest, block: block) {
                try await store.get(key, range: range)
            }
            guard bytes.count == Int(range.count) else {
                throw .origin(blob: digest, block: block, reason: "short read: \(bytes.count) of \(range.count) bytes")
            }
            do {
                try bytes.withUnsafeBytes { input in try LZ4Frame.decompress(input, into: target) }
            } catch {
                throw .integrity(blob: digest, block: block, expected: "an lz4 frame", actual: "undecodable (\(error))")
            }
        }
    }

    /// Fetches a run of whole blocks of an unstaged raw file with one ranged
    /// GET, straight into the cache's slots (no array per block: each was
    /// fresh pages to fault in and zero, then a copy). `nil` for lz4 files,
    /// whose blocks are separate frames.
    func remoteFetchRun(_ entry: Manifest.File, of model: ResolvedModel) -> BlobSource.FetchRun? {
        guard entry.encoding == .raw else { return nil }
        let fetchRaw = rawFetcher(entry, of: model)
        let blockSize = UInt64(model.blockSize)
        let size = entry.size
        return { (blocks: Range<Int>, targets: [UnsafeMutableRawBufferPointer], ahead: Bool) throws(CacheError) -> Void in
            let range = UInt64(blocks.lowerBound) * blockSize..<min(size, UInt64(blocks.upperBound) * blockSize)
            try fetchRaw(range, targets, blocks.lowerBound, ahead ? Self.readAheadPriority : Self.readerPriority)
        }
    }

    /// Store slots (`PartSlots`, lower first): blocks a reader waits on, then
    /// read-ahead, then pulls (whose files take priorities 0, 1, ...).
    static let readerPriority = -2
    static let readAheadPriority = -1

    /// GETs `range` of a raw file into `targets` (filled in turn), at
    /// `priority`, counted as read-through activity; `block` names the first
    /// block in errors.
    private func rawFetcher(
        _ entry: Manifest.File, of model: ResolvedModel
    ) -> @Sendable (Range<UInt64>, [UnsafeMutableRawBufferPointer], Int, Int) throws(CacheError) -> Void {
        let store = repository.store
        let key = repository.key(of: entry, in: model.reference)
        let digest = entry.xxh3_128 ?? entry.path
        let slots = transferSlots
        let activity = readThrough
        return { range, targets, block, priority throws(CacheError) in
            let into = targets.map { MemoryTarget($0) }
            guard into.reduce(0, { $0 + $1.buffer.count }) == Int(range.count) else {
                throw .origin(blob: digest, block: block, reason: "\(range.count) bytes into targets of another size")
            }
            try Self.fromStore(activity, slots, priority: priority, blob: digest, block: block) {
                try await store.read(key, range: range, into: into)
            }
        }
    }

    /// One read-through request to the store from a reader's (or a
    /// read-ahead) thread: counted as read-through activity, ahead of any
    /// pull's parts (someone is or soon will be waiting on these blocks), its
    /// failure reported as the block's origin's.
    private static func fromStore<T: Sendable>(
        _ activity: ReadThroughActivity, _ slots: PartSlots, priority: Int = readerPriority, blob digest: String, block: Int,
        _ request: @escaping @Sendable () async throws -> T
    ) throws(CacheError) -> T {
        do {
            return try activity.fetching { () throws(any Error) in
                try blocking {
                    try await slots.acquire(priority: priority)
                    defer { slots.release() }
                    return try await request()
                }
            }
        } catch {
            throw .origin(blob: digest, block: block, reason: "\(error)")
        }
    }
}
