import CFileSystem
import Foundation
import Integrity
import Logging
import Models
import ObjectStore

#if canImport(Glibc)
import Glibc
#endif

/// Brings one file of a model into `blobs/`, verified, resumably.
///
/// The object is downloaded by `ParallelDownloader` into `partials/<id>.partial`
/// (id: the manifest's xxh3-128, or for a file without a manifest a digest of
/// store, key, size and ETag). Each block is hashed as its bytes are written
/// (`StreamingBlockHasher`) and, when its part has landed, checked against the
/// manifest's xxh3-64 before the block map records it; a mismatch fails the
/// pull naming the block. The whole file is hashed too (xxh3-128,
/// `FrontierHasher`), part by part as the parts land. When every block is in,
/// its xxh3-128 is compared and it is renamed to `blobs/<xxh3-128>`: fsynced
/// first under `immediate` durability, marked unsynced under `deferred`
/// (see `Durability`). A crash leaves the
/// partial and its map: the next pull re-checks the blocks the map claims and
/// fetches only the parts still missing.
struct BlobPuller: Sendable {
    let layout: StagingLayout
    var downloader: ParallelDownloader
    let budget: StagingBudget
    let logger: Logger
    var evictions: EvictionCounter? = nil
    var durability: Durability = .deferred
    /// Downloads write with O_DIRECT where the filesystem allows (`DirectWriter`).
    var directWrites = true
    /// The direct writers' memory, shared by every file pulled at once (see
    /// `stage`); nil: each file gets a pool of its own.
    var directBuffers: DirectBuffers? = nil
    var freeSpace: FreeSpaceProbe = .statvfs
    /// Where verified blocks may already be in memory (the daemon's RAM tier).
    var donor: (any BlockDonor)? = nil

    struct Outcome: Sendable, Equatable {
        var digest: String
        /// Bytes fetched from the store by this pull.
        var downloaded: UInt64
        /// Bytes found verified in a partial left by an earlier, interrupted pull.
        var resumed: UInt64
        /// Bytes taken from the RAM tier (a `BlockDonor`) instead of the store.
        var donated: UInt64 = 0
        /// True when the blob was already staged: nothing was fetched.
        var alreadyStaged: Bool
        /// How long receiving waited for O_DIRECT writes to finish (see `DirectWriter.waitedForDisk`).
        var waitedForDisk: Duration = .zero
    }

    /// `keeping`: the blobs of the model being pulled, which making room for
    /// this file must not evict; this file's blob joins them once staged.
    func pull(
        _ file: Manifest.File, blockSize: Int, model: String, key: String, from store: any ObjectStore,
        progress: ProgressHandler?, keeping: KeptBlobs = KeptBlobs([])
    ) async throws(StagingError) -> Outcome {
        let outcome = try await stageOrFind(file, blockSize: blockSize, model: model, key: key, from: store, progress: progress, keeping: keeping)
        keeping.insert(outcome.digest)
        return outcome
    }

    private func stageOrFind(
        _ file: Manifest.File, blockSize: Int, model: String, key: String, from store: any ObjectStore,
        progress: ProgressHandler?, keeping: KeptBlobs
    ) async throws(StagingError) -> Outcome {
        func storeError(_ error: ObjectStoreError) -> StagingError { .store(model: model, file: file.path, error) }

        if let digest = file.xxh3_128, touch(layout.blob(digest)) {
            progress?(Int64(file.size))
            return Outcome(digest: digest, downloaded: 0, resumed: 0, alreadyStaged: true)
        }
        let object: ObjectInfo
        do { object = try await store.head(key) } catch { throw storeError(error) }
        guard object.size == file.storedSize else {
            throw .sizeMismatch(model: model, file: file.path, manifest: file.storedSize, store: object.size)
        }
        let id = file.xxh3_128 ?? ("k" + Digest128.of(Array("\(store.name)\0\(key)\0\(object.size)\0\(object.etag ?? "")".utf8)).description)

        let lock = try await BlobLock.acquire(layout.lock(id))
        defer { withExtendedLifetime(lock) {} }
        // Whoever held the lock before us may have finished this very blob.
        if let digest = file.xxh3_128, touch(layout.blob(digest)) {
            progress?(Int64(file.size))
            return Outcome(digest: digest, downloaded: 0, resumed: 0, alreadyStaged: true)
        }

        let evictor = Evictor(layout: layout, budget: budget, logger: logger, counter: evictions, freeSpace: freeSpace)
        try evictor.makeRoom(
            for: file.size, alreadyAllocated: allocated(layout.partial(id)), model: model, file: file.path, keeping: keeping.all)
        do {
            return try await stageRetryingCorruptParts(
                file, object, id: id, blockSize: blockSize, model: model, from: store, progress: progress)
        } catch where error.isNoSpace {
            // The filesystem filled up under us (another writer took the room
            // between our check and our allocation, or a filesystem without
            // fallocate): evict as if our reservation did not exist yet, and
            // try once more. A failed try leaves nothing behind: the
            // partial's space goes back to the filesystem.
            func discardPartial() {
                unlink(layout.partial(id))
                unlink(layout.blockMap(id))
            }
            let first = error
            let evicted: [String]
            do throws(StagingError) {
                evicted = try evictor.makeRoom(for: file.size, alreadyAllocated: 0, model: model, file: file.path, keeping: keeping.all)
            } catch {
                discardPartial()
                throw .noSpace(model: model, file: file.path, needed: file.size, detail: "\(first); then \(error)")
            }
            logger.notice(
                "\(model) \(file.path): the filesystem filled up during the pull (\(first)); evicted \(evicted.count) blob(s), trying once more")
            do throws(StagingError) {
                return try await stage(
                    file, object, id: id, blockSize: blockSize, model: model, from: store, progress: progress)
            } catch where error.isNoSpace {
                discardPartial()
                throw .noSpace(model: model, file: file.path, needed: file.size, detail: "\(error), after evicting \(evicted.count) blob(s) and trying again")
            }
        }
    }

    /// Parts whose blocks fail their check as they land are fetched again:
    /// bytes corrupted in transit (a flaky proxy, a bad NIC) cost a retry,
    /// while an object that is wrong in the store fails the pull after
    /// `corruptPartRetries` attempts, naming the block. Verified blocks are
    /// kept across attempts (the block map), so only the bad parts are refetched.
    static let corruptPartRetries = 5

    private func stageRetryingCorruptParts(
        _ file: Manifest.File, _ object: ObjectInfo, id: String, blockSize: Int, model: String,
        from store: any ObjectStore, progress: ProgressHandler?
    ) async throws(StagingError) -> Outcome {
        var attempt = 0
        while true {
            do {
                return try await stage(file, object, id: id, blockSize: blockSize, model: model, from: store, progress: progress)
            } catch {
                guard case .integrity(_, _, .some(let block), _, _) = error, attempt < Self.corruptPartRetries else { throw error }
                attempt += 1
                logger.warning(
                    "\(model) \(file.path): block \(block) failed its check as it landed; fetching it again (\(attempt)/\(Self.corruptPartRetries))")
            }
        }
    }

    /// Allocated bytes of a file on disk (0 if absent).
    private func allocated(_ path: String) -> UInt64 {
        var info = stat()
        return stat(path, &info) == 0 ? UInt64(info.st_blocks) * 512 : 0
    }

    /// Downloads what the partial lacks, verifies, and publishes the blob. Holds the blob's lock.
    private func stage(
        _ file: Manifest.File, _ object: ObjectInfo, id: String, blockSize: Int, model: String,
        from store: any ObjectStore, progress: ProgressHandler?
    ) async throws(StagingError) -> Outcome {
        func storeError(_ error: ObjectStoreError) -> StagingError { .store(model: model, file: file.path, error) }
        let partialPath = layout.partial(id)
        let size = file.size  // decoded: for lz4 the object is smaller
        let partial = try PartialFile(path: partialPath, size: size)
        let blockCount = Int((size + UInt64(blockSize) - 1) / UInt64(blockSize))
        let map = try BlockMap(path: layout.blockMap(id), count: blockCount)
        let expected = file.blocks?.compactMap { UInt64($0, radix: 16) }

        // Every block's xxh3-64 as it lands, kept beside the blob for the RAM
        // tier to check blocks against when it reads them back.
        let digests = BlockDigests(count: blockCount)
        // What an earlier pull left: count only blocks that check out now.
        var landed = try map.load()
        var resumed: UInt64 = 0
        for block in landed.indices where landed[block] {
            let range = Self.range(ofBlock: block, blockSize: blockSize, size: size)
            let actual = try partial.hash(range)
            if let expected, actual != expected[block] {
                landed[block] = false
                try map.set(block..<block + 1, landed: false)
            } else {
                digests.set(block, actual)
                resumed += UInt64(range.count)
            }
        }
        let downloader = self.downloader
        let blocksPerPart = Int(downloader.partSize) / blockSize
        // Blocks a reader already brought into RAM (read-through) are taken
        // from there, checked again against the manifest: fetched once, not twice.
        var donated: UInt64 = 0
        if let donor, file.encoding == .raw, let digest = file.xxh3_128, let expected {
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 64)
            defer { scratch.deallocate() }
            for block in landed.indices where !landed[block] {
                let range = Self.range(ofBlock: block, blockSize: blockSize, size: size)
                let bytes = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<Int(range.count)])
                guard donor.copy(blob: digest, block: block, into: bytes) else { continue }
                let actual = xxh3_64(UnsafeRawBufferPointer(bytes))
                guard actual == expected[block] else { continue }
                try partial.write(UnsafeRawBufferPointer(bytes), at: range.lowerBound)
                digests.set(block, actual)
                try map.set(block..<block + 1, landed: true)
                landed[block] = true
                donated += UInt64(range.count)
                // Copying, hashing and writing a block takes a few ms of this
                // cooperative-pool thread, a 2 GiB file about a second. Read-
                // through fetches resume on the same pool (the daemon's
                // `fromStore`), and a 2-core node has two such threads: let
                // them in between blocks.
                await Task.yield()
            }
            if donated > 0 {
                logger.info("\(model) \(file.path): \(donated) bytes taken from the RAM tier, fetched by readers already")
                progress?(Int64(donated))
            }
        }
        let parts = (0..<downloader.partCount(size)).filter { part in
            let blocks = (part * blocksPerPart)..<min(blockCount, (part + 1) * blocksPerPart)
            return blocks.contains { !landed[$0] }
        }
        if resumed > 0 {
            logger.notice(
                "resuming \(model) \(file.path): \(landed.filter { $0 }.count) of \(blockCount) blocks already staged")
            progress?(Int64(resumed))
        }

        let pool = BufferPool(capacity: Int(downloader.partSize), keep: downloader.concurrency + 2)
        // Raw downloads land with O_DIRECT (see `DirectWriter`); lz4 frames
        // are decoded into memory and written through the page cache.
        let wantsDirect = directWrites && file.encoding == .raw && !parts.isEmpty
        // Written parts wait in memory for the whole-file hash instead of
        // being read back from disk (`DirectWriter`'s keeping) while the
        // writers' buffers stay within the transfer budget (partSize x
        // concurrency; Staging's pool, shared by all its pulls). Parts in
        // flight progress side by side, so what has landed ahead of the
        // frontier is about half of them.
        let writerPool = directBuffers ?? Self.directBuffers(downloader)
        let writer = wantsDirect ? DirectWriter(path: partialPath, buffered: partial.descriptor, pool: writerPool) : nil
        defer { writer?.close() }  // every download has drained by then
        if wantsDirect && writer == nil {
            logger.debug("\(partialPath): the filesystem refuses O_DIRECT; writing through the page cache")
        }
        // The whole file's xxh3-128, hashed part by part as the parts land
        // (see `FrontierHasher`): the blob is published only if it equals the
        // manifest's, so a manifest whose block digests contradict its
        // whole-file digest is caught before anything is served. Parts
        // written with O_DIRECT come from the writer's kept buffers, or are
        // read back with O_DIRECT, so that the check does not fill the page
        // cache the writes kept clear.
        let hasher = FrontierHasher(
            partCount: downloader.partCount(size),
            ready: Set(0..<downloader.partCount(size)).subtracting(parts)
        ) { (part, body) throws(StagingError) in
            let range = downloader.range(ofPart: part, size: size)
            guard let writer else { return try withMapping(partial.descriptor, range, path: partialPath, body) }
            do throws(ObjectStoreError) {
                try writer.read(range, body)
            } catch {
                if case .localIO(let call, let path, let code) = error { throw .localIO(syscall: call, path: path, errno: code) }
                throw .localIO(syscall: "pread", path: partialPath, errno: EIO)
            }
        }
        // Under `immediate` durability each verified part's writeback starts
        // at once, so the final fsync has little left to wait for. Under
        // `deferred` the kernel writes back at its own pace: starting it here
        // blocks on a congested disk queue (measured: pull 0.71 of fetch with
        // it, 0.96 without).
        let bootID = durability == .deferred ? BootID.current() : nil
        let writeBack = bootID == nil
        // A part's decoded bytes have landed in the partial: check its blocks
        // (`digest(block)` gives each one's xxh3-64), record them, start their
        // writeback.
        let verify: @Sendable (Range<UInt64>, (Int) throws(StagingError) -> UInt64) throws(StagingError) -> Void = {
            (range, digest) throws(StagingError) in
            let first = Int(range.lowerBound / UInt64(blockSize))
            let last = Int((range.upperBound + UInt64(blockSize) - 1) / UInt64(blockSize))
            for block in first..<last {
                let actual = try digest(block)
                if let expected, actual != expected[block] {
                    throw StagingError.integrity(
                        model: model, file: file.path, block: block, expected: hex16(expected[block]),
                        actual: hex16(actual))
                }
                digests.set(block, actual)
            }
            try map.set(first..<last, landed: true)
            if writeBack { partial.startWriteback(range) }
        }
        // Decoded in memory (lz4 frames): check the blocks from the buffer.
        let accept: @Sendable (Int, Range<UInt64>, UnsafeRawBufferPointer) throws(StagingError) -> Void = {
            (part, range, bytes) throws(StagingError) in
            try verify(range) { block in
                let start = block * blockSize - Int(range.lowerBound)
                return xxh3_64(UnsafeRawBufferPointer(rebasing: bytes[start..<min(bytes.count, start + blockSize)]))
            }
            try hasher.landed(part)
        }

        var downloaded: UInt64 = 0
        do {
            switch file.encoding {
            case .raw:
                for part in parts { downloaded += UInt64(downloader.range(ofPart: part, size: size).count) }
                // Blocks are hashed as the download writes them; one the
                // stream did not see whole is read back from the partial.
                let streamed = StreamingBlockHasher(blockSize: blockSize, size: size)
                var output = partial.output
                output.observer = streamed
                output.directWriter = writer
                try await downloader.fill(object, from: store, into: output, parts: parts, progress: progress) {
                    part, range in
                    try verify(range) { (block) throws(StagingError) in
                        if let digest = streamed.take(block) { return digest }
                        return try partial.hash(Self.range(ofBlock: block, blockSize: blockSize, size: size))
                    }
                    try hasher.landed(part)
                }
            case .lz4:
                downloaded = try await fetchFrames(
                    file, object, parts: parts, blockSize: blockSize, model: model, from: store, into: partial,
                    pool: pool, progress: progress, accept: accept)
            }
        } catch let error as StagingError {
            throw error
        } catch let error as ObjectStoreError {
            throw storeError(error)
        } catch {
            throw storeError(.cancelled)
        }

        // Under `deferred` durability (and a readable boot id) the fsync is
        // settle's job, after a marker that makes a reboot re-verify the blob.
        if bootID == nil { try partial.sync() }
        let whole = try hasher.finish()
        let waitedForDisk = writer?.waitedForDisk ?? .zero
        if let sources = writer?.readSources {
            logger.debug(
                "\(model) \(file.path): whole-file hash took \(sources.memory) bytes from memory, read \(sources.disk) back; receivers waited \(waitedForDisk) for the disk")
        }
        if let digest = file.xxh3_128, whole.description != digest {
            // Every block matched but the whole does not: the manifest contradicts itself.
            partial.discard()
            unlink(layout.blockMap(id))
            throw .integrity(model: model, file: file.path, block: nil, expected: digest, actual: whole.description)
        }
        // The sidecar first: a blob never exists without its block digests.
        try BlockDigestFile(blockSize: blockSize, digests: digests.all).write(to: layout.blockDigests(whole.description))
        if let bootID {
            try UnsyncedMarkers(layout: layout).mark(whole.description, bootID: bootID)
            try partial.publish(as: layout.blob(whole.description))
        } else {
            try partial.publish(as: layout.blob(whole.description))
            syncDirectory(layout.blobs)
        }
        unlink(layout.blockMap(id))
        return Outcome(
            digest: whole.description, downloaded: downloaded, resumed: resumed, donated: donated, alreadyStaged: false,
            waitedForDisk: waitedForDisk)
    }

    /// A pool for direct writes whose limit is the transfer budget.
    static func directBuffers(_ downloader: ParallelDownloader) -> DirectBuffers {
        DirectBuffers(limit: Int(downloader.partSize) * downloader.concurrency)
    }

    static func range(ofBlock block: Int, blockSize: Int, size: UInt64) -> Range<UInt64> {
        let start = UInt64(block) * UInt64(blockSize)
        return start..<min(size, start + UInt64(blockSize))
    }

    /// Marks a staged blob as recently used (for LRU eviction); false if absent.
    func touch(_ path: String) -> Bool {
        utimes(path, nil) == 0
    }
}

extension StagingError {
    /// ENOSPC, from our own writes or from the store writing into our file.
    var isNoSpace: Bool {
        switch self {
        case .localIO(_, _, let e): e == ENOSPC
        case .store(_, _, let error):
            if case .localIO(_, _, let e) = error.underlying { e == ENOSPC } else { false }
        case .noSpace: true
        default: false
        }
    }
}

/// A `.partial` file: sized up front, read back for verification, renamed
/// into `blobs/` read-only when complete.
final class PartialFile: @unchecked Sendable {
    let path: String
    let descriptor: Int32

    init(path: String, size: UInt64) throws(StagingError) {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .localIO(syscall: "open", path: path, errno: errno) }
        var info = stat()
        if fstat(fd, &info) == 0 && UInt64(info.st_size) != size {
            // A different length than expected: not ours to resume.
            _ = ftruncate(fd, 0)
        }
        if size > 0 {
            let result = posix_fallocate(fd, 0, off_t(size))
            if result != 0 && result != EOPNOTSUPP && result != EINVAL {
                close(fd)
                throw .localIO(syscall: "posix_fallocate", path: path, errno: result)
            }
            if result != 0 && ftruncate(fd, off_t(size)) != 0 {
                let e = errno
                close(fd)
                throw .localIO(syscall: "ftruncate", path: path, errno: e)
            }
        }
        self.path = path
        self.descriptor = fd
    }

    deinit { close(descriptor) }

    var output: OutputFile { OutputFile(descriptor: descriptor, path: path) }

    /// The bytes in `range` as they are on disk now.
    func read(_ range: Range<UInt64>, from pool: BufferPool? = nil) throws(StagingError) -> PartBuffer {
        let buffer = PartBuffer(count: Int(range.count), from: pool)
        let failure = buffer.withMutableBytes { target -> Int32 in
            var done = 0
            while done < target.count {
                let n = pread(descriptor, target.baseAddress! + done, target.count - done, off_t(range.lowerBound) + off_t(done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return n < 0 ? errno : EIO }
                done += n
            }
            return 0
        }
        if failure != 0 { throw .localIO(syscall: "pread", path: path, errno: failure) }
        return buffer
    }

    /// xxh3-64 of the bytes in `range` as they are on disk now.
    func hash(_ range: Range<UInt64>) throws(StagingError) -> UInt64 {
        try read(range).withBytes { xxh3_64($0) }
    }

    /// Starts writing `range` back to disk now, so that the final fsync has
    /// little left to wait for (writeback overlaps the rest of the download).
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(StagingError) {
        var done = 0
        while done < bytes.count {
            let n = pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .localIO(syscall: "pwrite", path: path, errno: n < 0 ? errno : EIO) }
            done += n
        }
    }

    func startWriteback(_ range: Range<UInt64>) {
        _ = wc_start_writeback(descriptor, Int64(range.lowerBound), Int64(range.count))
    }

    func sync() throws(StagingError) {
        guard fsync(descriptor) == 0 else { throw .localIO(syscall: "fsync", path: path, errno: errno) }
    }

    /// Renames the partial to `destination`, read-only. If an identical blob
    /// got there first (same digest, same content), the partial is dropped.
    func publish(as destination: String) throws(StagingError) {
        _ = fchmod(descriptor, 0o444)
        guard rename(path, destination) == 0 else {
            throw .localIO(syscall: "rename", path: destination, errno: errno)
        }
    }

    func discard() { unlink(path) }
}
