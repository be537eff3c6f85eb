import CFileSystem
import Foundation
import Integrity

#if canImport(Glibc)
import Glibc
#endif

/// A blob as the cache reads it: where its blocks come from and the xxh3-64
/// each block must have (from the manifest, or recorded by the pull that
/// staged it). The digests are what make both origins safe: whatever loads a
/// block, the cache checks it before anyone can read it.
public struct BlobSource: Sendable {
    /// Loads block `block` (exactly its length: `blockSize`, shorter for the
    /// last) into the buffer. Runs on the reader's thread; may block.
    public typealias Fetch = @Sendable (_ block: Int, _ into: UnsafeMutableRawBufferPointer) throws(CacheError) -> Void
    /// Loads consecutive blocks `blocks` with one request, each into its
    /// buffer (in order, each exactly its block's length). Optional: a store
    /// pays per request, so a multi-block read costs fewer of them.
    /// `ahead`: read-ahead, which nobody waits on yet (a store queues it
    /// behind requests a reader waits on).
    public typealias FetchRun = @Sendable (_ blocks: Range<Int>, _ into: [UnsafeMutableRawBufferPointer], _ ahead: Bool) throws(CacheError) -> Void

    public enum Origin: Sendable {
        /// A verified blob on NVMe (staging): blocks are read with pread,
        /// O_DIRECT where the filesystem allows, straight into the arena.
        case file(path: String)
        /// Not staged yet: blocks come from the object store (read-through).
        case remote(Fetch)
    }

    public var digest: String
    public var origin: Origin
    public var size: UInt64
    public var blockSize: Int
    public var blockDigests: [UInt64]
    /// Where its tensors lie, for a safetensors file: read-ahead then follows
    /// tensor order (`TensorPrefetcher`) as well as block order.
    public var tensors: SafetensorsIndex?
    /// For a remote origin: loads several blocks at once (see `BlockCache.warm(_:blocks:)`).
    public var fetchRun: FetchRun?

    public init(
        digest: String, origin: Origin, size: UInt64, blockSize: Int, blockDigests: [UInt64], tensors: SafetensorsIndex? = nil
    ) {
        self.digest = digest
        self.origin = origin
        self.size = size
        self.blockSize = blockSize
        self.blockDigests = blockDigests
        self.tensors = tensors
    }

    /// The staged file, for a blob on NVMe.
    public var path: String? {
        if case .file(let path) = origin { return path }
        return nil
    }

    public init(digest: String, path: String, size: UInt64, blockSize: Int, blockDigests: [UInt64]) {
        self.init(digest: digest, origin: .file(path: path), size: size, blockSize: blockSize, blockDigests: blockDigests)
    }
}

/// How read-ahead fetches the blocks of a blob that is not staged yet: up to
/// `requests` requests to the store at once, each for a run of at most
/// `runBlocks` consecutive blocks. (A staged blob is read ahead one block at
/// a time, on one thread: NVMe needs no more.)
public struct RemoteReadAhead: Sendable, Equatable {
    public var requests: Int
    public var runBlocks: Int

    public init(requests: Int = 4, runBlocks: Int = 2) {
        self.requests = max(1, requests)
        self.runBlocks = max(1, runBlocks)
    }
}

/// The RAM tier: blocks of staged blobs in a fixed arena, loaded on a miss
/// from NVMe and checked against their xxh3-64 on the way in, evicted by the
/// configured policy. Thread-safe; `read` blocks its caller (run it on
/// worker threads, not the cooperative pool).
///
/// Every slot is empty, filling (one loader writes it, readers of that block
/// wait) or ready (readers copy from it; each holds a reference while it does,
/// and a referenced or pinned slot is never chosen for eviction). Memory
/// outside the arena is the index and per-slot state: it grows with the
/// number of slots, not with model size.
public final class BlockCache: @unchecked Sendable {
    public struct Statistics: Sendable, Equatable {
        public var hits = 0
        public var misses = 0
        public var evictions = 0
        public var integrityFailures = 0
        /// Blocks loaded ahead by read-ahead and then read / evicted unread.
        public var prefetchedUsed = 0
        public var prefetchedWasted = 0
        public var bytesFromNVMe: UInt64 = 0
        /// Loaded straight from the object store (read-through of unstaged blobs).
        public var bytesFromStore: UInt64 = 0
        public var residentBlocks = 0
        public var residentBytes: UInt64 = 0
        public var budgetBytes: UInt64 = 0
    }

    private enum State { case empty, filling, ready }

    private struct Slot {
        var key: BlockKey?
        var state = State.empty
        var readers = 0
        /// Loaded by read-ahead and not read since.
        var prefetched = false
    }

    public let blockSize: Int
    private let arena: Arena
    private let onCorruptBlob: @Sendable (String, Int) -> Void
    // Guarded by `condition`.
    private let condition = NSCondition()
    private var policy: any EvictionPolicy
    private var index: [BlockKey: Int] = [:]
    private var slots: [Slot]
    private var free: [Int]
    private var pinned = Set<String>()
    /// Ready blocks per blob, for per-file residency in stats.
    private var residentPerBlob: [String: Int] = [:]
    private var counts = Statistics()
    private var prefetchedResident = 0
    private var prefetcher: SequentialPrefetcher
    private var tensorPrefetcher: TensorPrefetcher
    private let readAhead: Int
    /// Read-ahead one block at a time: a sequential reader needs one NVMe
    /// stream ahead of it, and so does a reader that pipelines its own reads.
    private let serialLoader = BlockingThreads(width: 1, name: "weightcache.read-ahead")
    /// Read-ahead of blobs not staged yet (read-through), in runs of blocks,
    /// several requests at once, for readers that wait on each read.
    private let remoteLoaders: BlockingThreads
    private let remoteRunBlocks: Int

    /// `onCorruptBlob(digest, block)` hears of a block that failed its check
    /// (the owner quarantines the blob); it runs outside the cache's lock.
    /// `readAheadBlocks` caps the read-ahead window (0: no read-ahead).
    /// `remoteReadAhead`: how read-ahead fetches blocks from the store.
    /// `hugePages`: ask for transparent huge pages for the arena (see `Arena`).
    public init(
        budgetBytes: UInt64, blockSize: Int, policy: PolicyKind, readAheadBlocks: Int = 32, hugePages: Bool = false,
        remoteReadAhead: RemoteReadAhead = RemoteReadAhead(),
        onCorruptBlob: @escaping @Sendable (String, Int) -> Void = { _, _ in }
    ) throws(CacheError) {
        readAhead = max(0, readAheadBlocks)
        remoteLoaders = BlockingThreads(width: remoteReadAhead.requests, name: "weightcache.read-ahead.store")
        remoteRunBlocks = remoteReadAhead.runBlocks
        prefetcher = SequentialPrefetcher(initialWindow: min(2, max(1, readAheadBlocks)), maxWindow: max(1, readAheadBlocks))
        // Half the block read-ahead window, in bytes of following tensors.
        tensorPrefetcher = TensorPrefetcher(budgetBytes: UInt64(max(1, readAheadBlocks / 2)) * UInt64(blockSize))
        arena = try Arena(budgetBytes: budgetBytes, blockSize: blockSize, hugePages: hugePages)
        self.blockSize = blockSize
        self.policy = policy.make(slots: arena.slots)
        self.onCorruptBlob = onCorruptBlob
        slots = Array(repeating: Slot(), count: arena.slots)
        free = Array((0..<arena.slots).reversed())
        counts.budgetBytes = UInt64(arena.slots * blockSize)
    }

    public var statistics: Statistics {
        condition.lock()
        defer { condition.unlock() }
        var snapshot = counts
        snapshot.residentBlocks = slots.count - free.count
        snapshot.residentBytes = UInt64(snapshot.residentBlocks * blockSize)
        return snapshot
    }

    /// Blocks of a pinned blob are never evicted (they may still be absent).
    public func pin(blob digest: String) { condition.withLock { _ = pinned.insert(digest) } }
    public func unpin(blob digest: String) { condition.withLock { _ = pinned.remove(digest) } }

    /// Whether block `block` of `blob` is resident now (for tests and stats).
    public func isResident(blob digest: String, block: Int) -> Bool {
        condition.withLock {
            index[BlockKey(blob: digest, block: block)].map { slots[$0].state == .ready } ?? false
        }
    }

    /// Bytes of `blob` resident now (whole blocks; the last may be short).
    public func residentBytes(blob digest: String, size: UInt64) -> UInt64 {
        let blocks = condition.withLock { residentPerBlob[digest] ?? 0 }
        return min(size, UInt64(blocks) * UInt64(blockSize))
    }

    /// Runs `body` on block `block` of blob `digest` if it is resident and
    /// ready (checked on its way in), holding it meanwhile so that it is not
    /// evicted under `body`; false, without loading anything, if it is not.
    /// Not counted as a hit: the pull uses it to take blocks a reader already
    /// fetched instead of fetching them again.
    public func withResident(blob digest: String, block: Int, _ body: (UnsafeRawBufferPointer) -> Void) -> Bool {
        let key = BlockKey(blob: digest, block: block)
        condition.lock()
        guard let slot = index[key], slots[slot].state == .ready else {
            condition.unlock()
            return false
        }
        slots[slot].readers += 1
        condition.unlock()
        body(UnsafeRawBufferPointer(arena.slot(slot)))
        release(slot)
        return true
    }

    /// Every block resident now, in no particular order (for the warm set).
    public func residentBlocks() -> [BlockKey] {
        condition.withLock { slots.compactMap { $0.state == .ready ? $0.key : nil } }
    }

    /// Frees every resident block of `blob` that nobody is reading, pinned or
    /// not (the caller asked for it: `evict`). Returns the blocks freed.
    @discardableResult
    public func drop(blob digest: String) -> Int {
        condition.lock()
        defer { condition.unlock() }
        var freed = 0
        for (slot, state) in slots.enumerated() where state.key?.blob == digest && state.state == .ready && state.readers == 0 {
            release(slotOf: state.key!, slot: slot)
            policy.removed(slot: slot)
            free.append(slot)
            freed += 1
        }
        return freed
    }

    /// Loads block `block` of `blob` if it is absent (for `preload --tier
    /// ram`): counted neither as a hit nor as a miss. Waits for room like a read.
    public func warm(_ blob: BlobSource, block: Int) throws(CacheError) {
        let slot = try acquire(blob, block: block, counted: false)
        release(slot)
    }

    /// Makes every block of `blocks` resident, like `warm(_:block:)` on each.
    /// For a remote blob with a `fetchRun`, the absent ones are first loaded in
    /// runs of consecutive blocks, one request per run of at most `maxRun`
    /// blocks, each block checked as `load` checks it; a block that fails its
    /// check is loaded again on its own (`load`'s retries). Not counted as
    /// hits or misses.
    public func warm(_ blob: BlobSource, blocks: Range<Int>, maxRun: Int = 8) throws(CacheError) {
        if let fetchRun = blob.fetchRun, case .remote = blob.origin, blocks.count > 1 {
            try loadRuns(blob, blocks: blocks, maxRun: maxRun, fetchRun)
        }
        // Blocks another reader was loading, or that found no free slot.
        for block in blocks { try warm(blob, block: block) }
    }

    private func loadRuns(
        _ blob: BlobSource, blocks: Range<Int>, maxRun: Int, _ fetchRun: BlobSource.FetchRun
    ) throws(CacheError) {
        if let failure = fetchRuns(blob, reserve(blob, blocks: blocks, ahead: false), maxRun: maxRun, fetchRun, prefetched: false) {
            throw failure
        }
    }

    /// Takes a filling slot for each absent block of `blocks`, under one lock
    /// round. `ahead` (read-ahead): only while there is room that costs
    /// neither a pinned block nor more than half the cache in unread
    /// prefetches, as `prefetch` asks.
    private func reserve(_ blob: BlobSource, blocks: Range<Int>, ahead: Bool) -> [(block: Int, slot: Int)] {
        var taken: [(block: Int, slot: Int)] = []
        condition.lock()
        for block in blocks where block < blob.blockDigests.count {
            let key = BlockKey(blob: blob.digest, block: block)
            guard index[key] == nil else { continue }
            if ahead && free.isEmpty && prefetchedResident + taken.count >= slots.count / 2 { break }
            guard let slot = free.popLast() ?? evict() else { break }
            index[key] = slot
            slots[slot] = Slot(key: key, state: .filling, readers: 0)
            taken.append((block, slot))
        }
        condition.unlock()
        return taken
    }

    /// Fetches reserved blocks in runs of consecutive ones, one request per
    /// run of at most `maxRun`, and publishes each (or frees its slot); the
    /// first failure.
    private func fetchRuns(
        _ blob: BlobSource, _ taken: [(block: Int, slot: Int)], maxRun: Int, _ fetchRun: BlobSource.FetchRun, prefetched: Bool
    ) -> CacheError? {
        var first = 0
        var failure: CacheError?
        for blocks in Self.runs(of: taken.map(\.block), maxRun: maxRun) {
            let run = taken[first..<first + blocks.count]
            first += blocks.count
            let targets = run.map { UnsafeMutableRawBufferPointer(rebasing: arena.slot($0.slot)[0..<blockLength(blob, $0.block)]) }
            for ((_, slot), target) in zip(run, targets) { arena.prepare(slot, length: target.count) }
            var fetched: Result<Void, CacheError> = .success(())
            do { try fetchRun(run.first!.block..<run.last!.block + 1, targets, prefetched) } catch { fetched = .failure(error) }
            for ((block, slot), target) in zip(run, targets) {
                let key = BlockKey(blob: blob.digest, block: block)
                // A block that arrived intact is published; any other (the
                // request failed, or bytes were corrupted on the way) gets
                // the single-block path with its own retries.
                let loaded: Result<Void, CacheError> =
                    if case .success = fetched, xxh3_64(UnsafeRawBufferPointer(target)) == blob.blockDigests[block] {
                        .success(())
                    } else {
                        load(blob, block: block, into: arena.slot(slot))
                    }
                if let error = finish(slot, with: key, of: blob, prefetched: prefetched, loaded), failure == nil { failure = error }
            }
        }
        return failure
    }

    /// The bytes of `range` of `blob`, through the cache.
    public func read(_ blob: BlobSource, range: Range<UInt64>) throws(CacheError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Int(range.count))
        var failure: CacheError?
        bytes.withUnsafeMutableBytes { buffer in
            do throws(CacheError) { try read(blob, range: range, into: buffer) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Copies `range` of `blob` into `buffer` (exactly `range.count` bytes).
    /// `reader` identifies a client stream for read-ahead (sequential per
    /// reader); `pipelined`: the reader has other reads in flight.
    public func read(
        _ blob: BlobSource, range: Range<UInt64>, into buffer: UnsafeMutableRawBufferPointer, reader: Int = 0,
        pipelined: Bool = false
    ) throws(CacheError) {
        guard buffer.count >= range.count else { throw .outOfRange(blob: blob.digest, range: range, size: blob.size) }
        var position = 0
        try forEachBlock(of: blob, in: range, reader: reader, pipelined: pipelined) { piece in
            (buffer.baseAddress! + position).copyMemory(from: piece.baseAddress!, byteCount: piece.count)
            position += piece.count
            return true
        }
    }

    /// Hands the bytes of `range` to `body` in place, one block's share at a
    /// time, in order: the block is held (never evicted or reused) while
    /// `body` runs, so a caller can send straight from the arena without a
    /// copy. `body` returns false to stop early. `pipelined`: the reader has
    /// other reads in flight (see `releaseAndReadAhead`).
    public func forEachBlock(
        of blob: BlobSource, in range: Range<UInt64>, reader: Int = 0, pipelined: Bool = false,
        _ body: (UnsafeRawBufferPointer) -> Bool
    ) throws(CacheError) {
        guard range.upperBound <= blob.size else { throw .outOfRange(blob: blob.digest, range: range, size: blob.size) }
        guard blob.blockSize == blockSize else {
            throw .configuration("blob \(blob.digest) has \(blob.blockSize)-byte blocks; the cache's are \(blockSize) bytes (ramCache.blockSize must equal the models' block size)")
        }
        var position = range.lowerBound
        while position < range.upperBound {
            let block = Int(position / UInt64(blockSize))
            let blockStart = UInt64(block) * UInt64(blockSize)
            let end = min(range.upperBound, blockStart + UInt64(blockSize))
            let slot = try acquire(blob, block: block)
            let keepGoing = body(UnsafeRawBufferPointer(rebasing: arena.slot(slot)[Int(position - blockStart)..<Int(end - blockStart)]))
            releaseAndReadAhead(slot, after: block, at: position, of: blob, reader: reader, pipelined: pipelined)
            guard keepGoing else { return }
            position = end
        }
    }

    /// Drops the reader's hold on `slot` and queues loads of the blocks the
    /// prefetchers say come next (block order, and tensor order for a
    /// safetensors file) and are not resident yet, in one pass under the
    /// lock (one lock round per block read, not two): one hop to the prefetch
    /// queue for all of them, none when there is nothing to load (the common
    /// case of a warm reader).
    ///
    /// From the store, one request at a time caps a reader that waits on
    /// each read at one connection's rate (measured: 250-280 MiB/s here,
    /// against 770 for a pull), so its read-ahead goes in runs of blocks,
    /// several at once. A reader with other reads in flight (`pipelined`) is
    /// its own read-ahead: more requests beside its own only take the CPU
    /// and connections its next bytes need (measured: first tensor 262 ms
    /// with one block at a time, 361 ms with four runs at once).
    private func releaseAndReadAhead(
        _ slot: Int, after block: Int, at offset: UInt64, of blob: BlobSource, reader: Int, pipelined: Bool
    ) {
        condition.lock()
        slots[slot].readers -= 1
        if slots[slot].readers == 0 { condition.broadcast() }
        guard readAhead > 0 else {
            condition.unlock()
            return
        }
        var blocks = prefetcher.accessed(reader: reader, blob: blob.digest, block: block, blockCount: blob.blockDigests.count)
        if let tensors = blob.tensors {
            for range in tensorPrefetcher.accessed(reader: reader, blob: blob.digest, offset: offset, index: tensors)
            where !range.isEmpty {
                let first = Int(range.lowerBound / UInt64(blockSize))
                let last = Int((range.upperBound - 1) / UInt64(blockSize))
                blocks += (first...last).filter { $0 > block && !blocks.contains($0) }
            }
        }
        let ahead = blocks.filter { index[BlockKey(blob: blob.digest, block: $0)] == nil }
        condition.unlock()
        guard !ahead.isEmpty else { return }
        if case .remote = blob.origin, let fetchRun = blob.fetchRun, !pipelined {
            let runs = Self.runs(of: ahead.sorted(), maxRun: remoteRunBlocks)
            remoteLoaders.submit(runs.map { run in { [self] in prefetch(blob, blocks: run, fetchRun) } })
        } else {
            serialLoader.submit([{ [self] in for next in ahead { prefetch(blob, block: next) } }])
        }
    }

    /// Ascending, distinct `blocks` cut into ranges of consecutive ones, each
    /// at most `maxRun` long: what one request to the store fetches.
    static func runs(of blocks: [Int], maxRun: Int) -> [Range<Int>] {
        var runs: [Range<Int>] = []
        for block in blocks {
            if let last = runs.last, last.upperBound == block, last.count < maxRun {
                runs[runs.count - 1] = last.lowerBound..<block + 1
            } else {
                runs.append(block..<block + 1)
            }
        }
        return runs
    }

    /// Loads the absent blocks of `blocks` of a remote blob ahead of their
    /// read, in one request, where there is room for read-ahead (`reserve`).
    private func prefetch(_ blob: BlobSource, blocks: Range<Int>, _ fetchRun: BlobSource.FetchRun) {
        _ = fetchRuns(blob, reserve(blob, blocks: blocks, ahead: true), maxRun: blocks.count, fetchRun, prefetched: true)
    }

    /// Loads a block ahead of its read, if it is absent and there is room that
    /// does not cost a pinned block or more than half the cache in unread
    /// prefetches (read-ahead backs off under pressure instead of thrashing).
    private func prefetch(_ blob: BlobSource, block: Int) {
        let key = BlockKey(blob: blob.digest, block: block)
        condition.lock()
        guard index[key] == nil,
            !free.isEmpty || prefetchedResident < slots.count / 2,
            let slot = free.popLast() ?? evict()
        else {
            condition.unlock()
            return
        }
        index[key] = slot
        slots[slot] = Slot(key: key, state: .filling, readers: 0)
        condition.unlock()
        _ = fill(slot, with: key, of: blob, prefetched: true)
    }

    /// Loads `key` into `slot`, which the caller has marked filling (lock not
    /// held), then publishes it ready, or frees the slot and reports a failure.
    private func fill(_ slot: Int, with key: BlockKey, of blob: BlobSource, prefetched: Bool) -> CacheError? {
        arena.prepare(slot, length: blockLength(blob, key.block))
        return finish(slot, with: key, of: blob, prefetched: prefetched, load(blob, block: key.block, into: arena.slot(slot)))
    }

    /// Publishes a filling slot ready once its block is `loaded` (checked), or
    /// frees it and reports the failure.
    private func finish(
        _ slot: Int, with key: BlockKey, of blob: BlobSource, prefetched: Bool, _ loaded: Result<Void, CacheError>
    ) -> CacheError? {
        condition.lock()
        if case .failure(let error) = loaded {
            index[key] = nil
            slots[slot] = Slot()
            free.append(slot)
            if case .integrity = error { counts.integrityFailures += 1 }
            condition.broadcast()
            condition.unlock()
            // Only a staged blob can be quarantined; a bad remote block is the store's.
            if case .integrity = error, case .file = blob.origin { onCorruptBlob(blob.digest, key.block) }
            return error
        }
        slots[slot].state = .ready
        residentPerBlob[key.blob, default: 0] += 1
        if prefetched {
            slots[slot].prefetched = true
            prefetchedResident += 1
        }
        policy.inserted(slot: slot, key: key, prefetched: prefetched)
        if case .remote = blob.origin {
            counts.bytesFromStore += UInt64(blockLength(blob, key.block))
        } else {
            counts.bytesFromNVMe += UInt64(blockLength(blob, key.block))
        }
        condition.broadcast()
        condition.unlock()
        return nil
    }

    /// A ready slot holding the block, with a reader reference taken.
    private func acquire(_ blob: BlobSource, block: Int, counted: Bool = true) throws(CacheError) -> Int {
        let key = BlockKey(blob: blob.digest, block: block)
        condition.lock()
        while true {
            if let slot = index[key] {
                if slots[slot].state == .ready {
                    slots[slot].readers += 1
                    guard counted else {
                        condition.unlock()
                        return slot
                    }
                    policy.accessed(slot: slot)
                    counts.hits += 1
                    if slots[slot].prefetched {
                        slots[slot].prefetched = false
                        prefetchedResident -= 1
                        counts.prefetchedUsed += 1
                    }
                    condition.unlock()
                    return slot
                }
                condition.wait()  // another reader is loading it
                continue
            }
            guard let slot = free.popLast() ?? evict() else {
                // Busy slots free up soon; pinned ones never do.
                if slots.contains(where: { $0.readers > 0 || $0.state == .filling }) {
                    condition.wait()
                    continue
                }
                condition.unlock()
                throw .full(blob: blob.digest, block: block)
            }
            index[key] = slot
            slots[slot] = Slot(key: key, state: .filling, readers: 1)
            if counted { counts.misses += 1 }
            condition.unlock()

            if let error = fill(slot, with: key, of: blob, prefetched: false) { throw error }
            return slot  // still holding the reader reference taken above
        }
    }

    private func release(_ slot: Int) {
        condition.lock()
        slots[slot].readers -= 1
        if slots[slot].readers == 0 { condition.broadcast() }
        condition.unlock()
    }

    /// Under the lock: frees a slot the policy picks among the evictable ones.
    private func evict() -> Int? {
        let victim = policy.victim { slot in
            let s = slots[slot]
            return s.state == .ready && s.readers == 0 && !(s.key.map { pinned.contains($0.blob) } ?? false)
        }
        guard let victim, let key = slots[victim].key else { return nil }
        release(slotOf: key, slot: victim)
        counts.evictions += 1
        return victim
    }

    /// Under the lock: forgets a ready slot's block (the slot is not yet free).
    private func release(slotOf key: BlockKey, slot: Int) {
        if slots[slot].prefetched {  // loaded ahead, never read
            prefetchedResident -= 1
            counts.prefetchedWasted += 1
        }
        index[key] = nil
        slots[slot] = Slot()
        if let count = residentPerBlob[key.blob] {
            residentPerBlob[key.blob] = count > 1 ? count - 1 : nil
        }
    }

    private func blockLength(_ blob: BlobSource, _ block: Int) -> Int {
        Int(min(UInt64(blockSize), blob.size - UInt64(block) * UInt64(blockSize)))
    }

    /// Loads a block from its origin into `target` and checks it.
    private func load(_ blob: BlobSource, block: Int, into target: UnsafeMutableRawBufferPointer) -> Result<Void, CacheError> {
        guard block < blob.blockDigests.count else {
            return .failure(.outOfRange(blob: blob.digest, range: UInt64(block * blockSize)..<UInt64(block * blockSize), size: blob.size))
        }
        let length = blockLength(blob, block)
        let destination = UnsafeMutableRawBufferPointer(rebasing: target[0..<length])
        switch blob.origin {
        case .file(let path):
            switch Self.readBlock(path: path, offset: block * blockSize, length: length, into: target) {
            case .failure(let error): return .failure(error)
            case .success(let count) where count < length:
                // Truncated behind our back: as corrupt as a flipped byte.
                return .failure(.integrity(
                    blob: blob.digest, block: block, expected: hex16(blob.blockDigests[block]),
                    actual: "missing (\(count) of \(length) bytes: the file ends early)"))
            case .success: break
            }
        case .remote(let fetch):
            // A block corrupted on the way from the store is fetched again (a
            // few times: one that is wrong in the store stays wrong).
            for attempt in 1...Self.remoteAttempts {
                do { try fetch(block, destination) } catch { return .failure(error) }
                if xxh3_64(UnsafeRawBufferPointer(destination)) == blob.blockDigests[block] || attempt == Self.remoteAttempts { break }
            }
        }
        let actual = xxh3_64(UnsafeRawBufferPointer(destination))
        guard actual == blob.blockDigests[block] else {
            return .failure(.integrity(
                blob: blob.digest, block: block, expected: hex16(blob.blockDigests[block]), actual: hex16(actual)))
        }
        return .success(())
    }

    /// Bytes read: fewer than asked when the file ends early.
    static let remoteAttempts = 4

    /// Reads `length` bytes at `offset` of the blob into `target` (an
    /// arena slot: page-aligned, a whole block long), with O_DIRECT: the
    /// bytes go from the disk straight into the arena, not through the page
    /// cache as well (one copy less, and the RAM tier is not held twice).
    /// Through the page cache where O_DIRECT is refused. Returns the bytes
    /// read: fewer than `length` when the file ends early.
    private static func readBlock(
        path: String, offset: Int, length: Int, into target: UnsafeMutableRawBufferPointer
    ) -> Result<Int, CacheError> {
        let page = 4096
        let rounded = (length + page - 1) / page * page
        let aligned = offset % page == 0 && Int(bitPattern: target.baseAddress!) % page == 0 && rounded <= target.count
        var fd = aligned ? open(path, O_RDONLY | O_CLOEXEC | wc_o_direct()) : -1
        var direct = fd >= 0
        if fd < 0 { fd = open(path, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { return .failure(.system(syscall: "open", path: path, errno: errno)) }
        defer { close(fd) }
        var done = 0
        while done < length {
            let n = direct
                ? pread(fd, target.baseAddress! + done, rounded - done, off_t(offset + done))
                : pread(fd, target.baseAddress! + done, length - done, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EINVAL && direct {
                // Refused for this file after all: the page cache, from here on.
                let buffered = open(path, O_RDONLY | O_CLOEXEC)
                guard buffered >= 0 else { return .failure(.system(syscall: "open", path: path, errno: errno)) }
                close(fd)
                fd = buffered
                direct = false
                continue
            }
            if n == 0 { break }
            guard n > 0 else { return .failure(.system(syscall: "pread", path: path, errno: errno)) }
            done += n
            if direct && done % page != 0 { break }  // a short O_DIRECT read: the end of the file
        }
        return .success(min(done, length))
    }
}
