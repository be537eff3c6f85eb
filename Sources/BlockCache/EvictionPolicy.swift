// BlockCache: the RAM tier.
//
// A fixed arena of block-sized slots (see `Arena`) holds blocks of staged
// blobs, keyed by (blob digest, block number). Which slot to reuse when the
// arena is full is the eviction policy's call, behind `EvictionPolicy`, so
// that policies can be swapped in config and compared on traces. Policies see
// slot numbers (fixed, dense: arrays, O(1) per operation) and, for the history
// a scan-resistant policy keeps of blocks no longer resident, keys.
// The cache calls a policy under its own lock: policies are not thread-safe.

/// A block of a blob.
public struct BlockKey: Hashable, Sendable, CustomStringConvertible {
    public var blob: String
    public var block: Int

    public init(blob: String, block: Int) {
        self.blob = blob
        self.block = block
    }

    public var description: String { "\(blob)#\(block)" }
}

/// Decides which resident block leaves when room is needed.
public protocol EvictionPolicy {
    /// `slot` now holds `key`; `prefetched` when it was loaded ahead of any read.
    mutating func inserted(slot: Int, key: BlockKey, prefetched: Bool)
    /// `slot` was read (a hit).
    mutating func accessed(slot: Int)
    /// The resident block to evict next among those `evictable` allows
    /// (pinned and in-use blocks are not); nil if there is none. The policy
    /// forgets the slot it returns.
    mutating func victim(evictable: (Int) -> Bool) -> Int?
    /// `slot` was emptied by the cache itself (say, a failed load).
    mutating func removed(slot: Int)
}

/// The policies config can name.
public enum PolicyKind: String, Sendable, CaseIterable {
    case lru
    case s3fifo = "s3-fifo"

    func make(slots: Int) -> any EvictionPolicy {
        switch self {
        case .lru: LRUPolicy(slots: slots)
        case .s3fifo: S3FIFOPolicy(slots: slots)
        }
    }
}

/// A doubly linked list over slot numbers, in two arrays: the building block of both policies.
struct SlotList {
    private var next: [Int]
    private var previous: [Int]
    private var member: [Bool]
    private(set) var head = -1  // most recent end
    private(set) var tail = -1  // oldest end
    private(set) var count = 0

    init(slots: Int) {
        next = Array(repeating: -1, count: slots)
        previous = Array(repeating: -1, count: slots)
        member = Array(repeating: false, count: slots)
    }

    func contains(_ slot: Int) -> Bool { member[slot] }

    mutating func pushHead(_ slot: Int) {
        precondition(!member[slot])
        member[slot] = true
        previous[slot] = -1
        next[slot] = head
        if head >= 0 { previous[head] = slot }
        head = slot
        if tail < 0 { tail = slot }
        count += 1
    }

    mutating func remove(_ slot: Int) {
        guard member[slot] else { return }
        member[slot] = false
        if previous[slot] >= 0 { next[previous[slot]] = next[slot] } else { head = next[slot] }
        if next[slot] >= 0 { previous[next[slot]] = previous[slot] } else { tail = previous[slot] }
        count -= 1
    }

    /// From the oldest end towards the newest.
    func older(than slot: Int) -> Int { previous[slot] }
}

/// Least recently used first.
public struct LRUPolicy: EvictionPolicy {
    private var list: SlotList

    public init(slots: Int) { list = SlotList(slots: slots) }

    public mutating func inserted(slot: Int, key: BlockKey, prefetched: Bool) {
        list.remove(slot)
        list.pushHead(slot)
    }

    public mutating func accessed(slot: Int) {
        guard list.contains(slot) else { return }
        list.remove(slot)
        list.pushHead(slot)
    }

    public mutating func victim(evictable: (Int) -> Bool) -> Int? {
        var candidate = list.tail
        while candidate >= 0 && !evictable(candidate) { candidate = list.older(than: candidate) }
        guard candidate >= 0 else { return nil }
        list.remove(candidate)
        return candidate
    }

    public mutating func removed(slot: Int) { list.remove(slot) }
}
