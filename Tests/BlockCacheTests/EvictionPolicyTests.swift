import XCTest

@testable import BlockCache

/// A resident set driven by a policy, as the cache drives it: for scripted
/// sequences without the arena.
struct Simulator {
    var policy: any EvictionPolicy
    let capacity: Int
    var slotOf: [BlockKey: Int] = [:]
    var keyOf: [Int: BlockKey] = [:]
    var pinned: Set<String> = []
    var evicted: [BlockKey] = []
    var hits = 0

    init(_ kind: PolicyKind, capacity: Int) {
        policy = kind.make(slots: capacity)
        self.capacity = capacity
    }

    mutating func access(_ key: BlockKey) {
        if let slot = slotOf[key] {
            hits += 1
            policy.accessed(slot: slot)
            return
        }
        var slot = (0..<capacity).first { keyOf[$0] == nil }
        if slot == nil {
            let keys = keyOf
            let pins = pinned
            slot = policy.victim { !pins.contains(keys[$0]!.blob) }
            guard let victim = slot else { return XCTFail("no victim for \(key)") }
            evicted.append(keyOf[victim]!)
            slotOf[keyOf[victim]!] = nil
        }
        slotOf[key] = slot!
        keyOf[slot!] = key
        policy.inserted(slot: slot!, key: key)
    }
}

func k(_ blob: String, _ block: Int = 0) -> BlockKey { BlockKey(blob: blob, block: block) }

final class EvictionPolicyTests: XCTestCase {
    func testLRUEvictsLeastRecentlyUsed() {
        var lru = Simulator(.lru, capacity: 3)
        for key in [k("a"), k("b"), k("c"), k("a"), k("d"), k("b"), k("e")] { lru.access(key) }
        // d evicts b (a was touched again); b returns, evicting c; e evicts a.
        XCTAssertEqual(lru.evicted, [k("b"), k("c"), k("a")])
        XCTAssertEqual(lru.hits, 1)
    }

    func testS3FIFOOrder() {
        // 10 slots: small queue of 1, main of 9.
        var fifo = Simulator(.s3fifo, capacity: 10)
        for i in 0..<10 { fifo.access(k("x", i)) }
        fifo.access(k("x", 3))  // read again: will be promoted instead of evicted
        fifo.access(k("y"))
        // Small holds everything at first (main is empty): the oldest not re-read goes first.
        XCTAssertEqual(fifo.evicted, [k("x", 0)])
        fifo.access(k("x", 0))  // back from the ghost queue: straight into main
        XCTAssertEqual(fifo.evicted.count, 2)
        XCTAssertFalse(fifo.evicted.contains(k("x", 3)), "a re-read block was evicted before unread ones")
    }

    func testPinnedBlocksAreNeverVictims() {
        for kind in PolicyKind.allCases {
            var sim = Simulator(kind, capacity: 4)
            sim.pinned = ["hot"]
            sim.access(k("hot", 0))
            sim.access(k("hot", 1))
            for i in 0..<50 { sim.access(k("cold", i)) }
            XCTAssertFalse(sim.evicted.contains { $0.blob == "hot" }, "\(kind) evicted a pinned block")
        }
    }

    /// The scan resistance S3-FIFO is here for: a hot working set keeps being
    /// read while a cold model is scanned once.
    func testScanResistance() {
        func hotHitRatio(_ kind: PolicyKind) -> Double {
            var sim = Simulator(kind, capacity: 100)
            for round in 0..<3 { for i in 0..<60 { sim.access(k("hot", i)) }; _ = round }
            let before = sim.hits
            var hotReads = 0
            for i in 0..<400 {
                sim.access(k("scan", i))  // a cold model read once, front to back
                sim.access(k("hot", i % 60))
                hotReads += 1
            }
            // Hot hits during the scan (scan blocks never hit).
            return Double(sim.hits - before) / Double(hotReads)
        }
        let lru = hotHitRatio(.lru)
        let s3fifo = hotHitRatio(.s3fifo)
        XCTAssertGreaterThan(s3fifo, 0.9, "S3-FIFO hot hit ratio during a scan: \(s3fifo)")
        XCTAssertGreaterThanOrEqual(s3fifo, lru, "LRU \(lru) vs S3-FIFO \(s3fifo)")
    }
}
