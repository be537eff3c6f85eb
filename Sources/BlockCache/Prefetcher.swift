/// Sequential read-ahead, per reader and blob: the window doubles while a
/// reader keeps reading the next block (up to `maxWindow`) and collapses to
/// `initialWindow` when it jumps. A jump itself fetches nothing ahead: a
/// random reader (4 KiB here, 4 KiB there) must not cost two blocks of I/O per
/// read; the next block read in order starts the window again. Pure: it only says which blocks to fetch
/// ahead; the cache (or a trace replayer) fetches them. Not thread-safe.
public struct SequentialPrefetcher: Sendable {
    private struct Stream {
        var last: Int
        var window: Int
        /// Blocks up to here were already asked for: never ask twice.
        var requestedThrough: Int
    }

    public let initialWindow: Int
    public let maxWindow: Int
    private struct StreamKey: Hashable {
        var reader: Int
        var blob: String
    }

    private var streams: [StreamKey: Stream] = [:]

    public init(initialWindow: Int = 2, maxWindow: Int = 32) {
        self.initialWindow = max(1, initialWindow)
        self.maxWindow = max(self.initialWindow, maxWindow)
    }

    /// Reader `reader` read `block` of `blob` (of `blockCount` blocks): the
    /// blocks to fetch ahead now, in order.
    public mutating func accessed(reader: Int, blob: String, block: Int, blockCount: Int) -> [Int] {
        let id = StreamKey(reader: reader, blob: blob)
        if streams.count > 4096 && streams[id] == nil { streams.removeAll(keepingCapacity: true) }  // readers come and go
        var stream = streams[id] ?? Stream(last: block - 1, window: initialWindow, requestedThrough: block)
        if block == stream.last + 1 {
            stream.window = min(maxWindow, stream.window * 2)
        } else if block != stream.last {
            // A jump: random access until the next read proves otherwise.
            stream.window = initialWindow
            stream.requestedThrough = block
            stream.last = block
            streams[id] = stream
            return []
        }
        stream.last = block
        let end = min(blockCount - 1, block + stream.window)
        let from = max(block + 1, stream.requestedThrough + 1)
        stream.requestedThrough = max(stream.requestedThrough, end)
        streams[id] = stream
        return from <= end ? Array(from...end) : []
    }
}

/// safetensors-aware read-ahead: when a reader moves to a tensor it was not
/// reading, the tensors that follow it in offset order are fetched, up to a
/// byte budget. Loaders read a shard tensor by tensor, mostly in file order
/// but not always (some go by name): following offset order from the tensor
/// actually touched is right in both cases, where block-sequential read-ahead
/// would collapse at every out-of-order jump. Pure, like
/// `SequentialPrefetcher`; not thread-safe.
public struct TensorPrefetcher: Sendable {
    private struct StreamKey: Hashable {
        var reader: Int
        var blob: String
    }

    /// Most bytes of following tensors asked for per move.
    public let budgetBytes: UInt64
    private var lastTensor: [StreamKey: Int] = [:]

    public init(budgetBytes: UInt64) {
        self.budgetBytes = budgetBytes
    }

    /// Reader `reader` read byte `offset` of `blob`, laid out as `index`:
    /// the byte ranges to fetch ahead now, in file order.
    public mutating func accessed(reader: Int, blob: String, offset: UInt64, index: SafetensorsIndex) -> [Range<UInt64>] {
        guard let tensor = index.tensor(at: offset) else { return [] }
        let key = StreamKey(reader: reader, blob: blob)
        if lastTensor.count > 4096 && lastTensor[key] == nil { lastTensor.removeAll(keepingCapacity: true) }
        guard lastTensor[key] != tensor else { return [] }
        lastTensor[key] = tensor
        var ranges: [Range<UInt64>] = []
        var bytes: UInt64 = 0
        for next in index.tensors[(tensor + 1)...] where bytes < budgetBytes {
            ranges.append(next.range)
            bytes += UInt64(next.range.count)
        }
        return ranges
    }
}

/// A resident set run by a policy, without an arena: for replaying traces and
/// for scripted tests of the policies. Counts what the real cache counts.
public struct PolicySimulator {
    public private(set) var hits = 0
    public private(set) var misses = 0
    public private(set) var prefetchedUsed = 0
    public private(set) var prefetchedUnused = 0
    public private(set) var evicted: [BlockKey] = []
    public var pinned: Set<String> = []
    public var recordEvictions = false

    private var policy: any EvictionPolicy
    private let capacity: Int
    private var slotOf: [BlockKey: Int] = [:]
    private var keyOf: [BlockKey?]
    private var prefetched: Set<BlockKey> = []
    private var free: [Int]

    public init(_ kind: PolicyKind, capacity: Int) {
        policy = kind.make(slots: capacity)
        self.capacity = capacity
        keyOf = Array(repeating: nil, count: capacity)
        free = Array((0..<capacity).reversed())
    }

    public func isResident(_ key: BlockKey) -> Bool { slotOf[key] != nil }

    /// A read of `key`; true on a hit.
    @discardableResult
    public mutating func access(_ key: BlockKey) -> Bool {
        if let slot = slotOf[key] {
            hits += 1
            if prefetched.remove(key) != nil { prefetchedUsed += 1 }
            policy.accessed(slot: slot)
            return true
        }
        misses += 1
        insert(key)
        return false
    }

    /// Loads `key` ahead of a read (no-op if resident).
    public mutating func prefetch(_ key: BlockKey) {
        guard slotOf[key] == nil else { return }
        if insert(key, prefetched: true) { prefetched.insert(key) }
    }

    @discardableResult
    private mutating func insert(_ key: BlockKey, prefetched isPrefetch: Bool = false) -> Bool {
        var slot = free.popLast()
        if slot == nil {
            let keys = keyOf
            let pins = pinned
            slot = policy.victim { !pins.contains(keys[$0]!.blob) }
            guard let victim = slot, let old = keyOf[victim] else { return false }
            if recordEvictions { evicted.append(old) }
            if prefetched.remove(old) != nil { prefetchedUnused += 1 }
            slotOf[old] = nil
        }
        slotOf[key] = slot!
        keyOf[slot!] = key
        policy.inserted(slot: slot!, key: key, prefetched: isPrefetch)
        return true
    }

    /// Blocks prefetched and still resident but not read yet count as unused at the end.
    public var prefetchedPending: Int { prefetched.count }
}
