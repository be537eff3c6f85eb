/// S3-FIFO (Yang et al., SOSP 2023): scan-resistant with FIFO queues only.
///
/// New blocks enter a small FIFO (10% of the slots). A block leaving it that
/// was read again meanwhile moves to the main FIFO; one that was not is evicted
/// and its key remembered in a ghost FIFO. A block inserted while its key is
/// in the ghost goes straight to main. Main gives each block a second chance
/// per recorded access (up to 3) before evicting it. So a one-off scan of a
/// cold model passes through the small queue without pushing the hot model's
/// blocks out of main, where LRU would let it flush everything.
public struct S3FIFOPolicy: EvictionPolicy {
    private var small: SlotList
    private var main: SlotList
    private var frequency: [UInt8]
    /// Loaded by prefetch and not read yet.
    private var credit: [Bool]
    private var keys: [BlockKey?]
    private var ghost: [BlockKey] = []
    private var ghostHead = 0
    private var ghostSet = Set<BlockKey>()
    private let smallTarget: Int
    private let ghostLimit: Int

    public init(slots: Int) {
        small = SlotList(slots: slots)
        main = SlotList(slots: slots)
        frequency = Array(repeating: 0, count: slots)
        credit = Array(repeating: false, count: slots)
        keys = Array(repeating: nil, count: slots)
        smallTarget = max(1, slots / 10)
        ghostLimit = max(1, slots - slots / 10)
    }

    public mutating func inserted(slot: Int, key: BlockKey, prefetched: Bool) {
        removed(slot: slot)
        keys[slot] = key
        // A prefetched block is read some time after it lands, usually after
        // the small queue has moved on: a credit carries it into main instead
        // of out of the cache before its read; the read spends the credit, so
        // a block read once (a sequential load) leaves first afterwards.
        frequency[slot] = prefetched ? 1 : 0
        credit[slot] = prefetched
        if ghostSet.remove(key) != nil { main.pushHead(slot) } else { small.pushHead(slot) }
    }

    public mutating func accessed(slot: Int) {
        if credit[slot] {
            credit[slot] = false
            frequency[slot] = 0
        } else {
            frequency[slot] = min(3, frequency[slot] + 1)
        }
    }

    public mutating func victim(evictable: (Int) -> Bool) -> Int? {
        // Each resident block is looked at a bounded number of times (a
        // promotion, or up to three second chances), so this terminates.
        var budget = 8 * (small.count + main.count) + 8
        while budget > 0 && (small.count > 0 || main.count > 0) {
            budget -= 1
            if small.count >= smallTarget || main.count == 0 {
                let slot = small.tail
                small.remove(slot)
                if frequency[slot] > 0 || !evictable(slot) {
                    // Read again while in small (or busy, or prefetched and not
                    // read yet): it earns a place in main.
                    if !credit[slot] { frequency[slot] = 0 }
                    main.pushHead(slot)
                    continue
                }
                remember(keys[slot])
                keys[slot] = nil
                return slot
            } else {
                let slot = main.tail
                main.remove(slot)
                if frequency[slot] > 0 || !evictable(slot) {
                    frequency[slot] = frequency[slot] > 0 ? frequency[slot] - 1 : 0
                    main.pushHead(slot)
                    continue
                }
                keys[slot] = nil
                return slot
            }
        }
        return nil
    }

    public mutating func removed(slot: Int) {
        small.remove(slot)
        main.remove(slot)
        keys[slot] = nil
        frequency[slot] = 0
        credit[slot] = false
    }

    private mutating func remember(_ key: BlockKey?) {
        guard let key else { return }
        ghost.append(key)
        ghostSet.insert(key)
        if ghost.count - ghostHead > ghostLimit {
            ghostSet.remove(ghost[ghostHead])
            ghostHead += 1
            if ghostHead > 4096 && ghostHead * 2 > ghost.count {
                ghost.removeFirst(ghostHead)
                ghostHead = 0
            }
        }
    }
}
