import XCTest

@testable import BlockCache

/// The cache's own simulator, recording evictions for the scripted checks.
func Simulator(_ kind: PolicyKind, capacity: Int) -> PolicySimulator {
    var simulator = PolicySimulator(kind, capacity: capacity)
    simulator.recordEvictions = true
    return simulator
}

func k(_ blob: String, _ block: Int = 0) -> BlockKey { BlockKey(blob: blob, block: block) }

final class PrefetcherTests: XCTestCase {
    func testWindowGrowsOnSequentialReadsAndCollapsesOnJumps() {
        var prefetcher = SequentialPrefetcher(initialWindow: 2, maxWindow: 8)
        XCTAssertEqual(prefetcher.accessed(reader: 0, blob: "b", block: 0, blockCount: 100), [1, 2, 3, 4])
        XCTAssertEqual(prefetcher.accessed(reader: 0, blob: "b", block: 1, blockCount: 100), [5, 6, 7, 8, 9])
        XCTAssertEqual(prefetcher.accessed(reader: 0, blob: "b", block: 2, blockCount: 100), [10])  // window capped at 8
        XCTAssertEqual(prefetcher.accessed(reader: 0, blob: "b", block: 50, blockCount: 100), [])  // jump: nothing ahead
        XCTAssertEqual(prefetcher.accessed(reader: 0, blob: "b", block: 51, blockCount: 100), [52, 53, 54, 55])  // in order again: restart small
        XCTAssertEqual(prefetcher.accessed(reader: 0, blob: "b", block: 97, blockCount: 100), [])
        XCTAssertEqual(prefetcher.accessed(reader: 0, blob: "b", block: 98, blockCount: 100), [99])  // clipped at the end
        // Readers are tracked apart.
        XCTAssertEqual(prefetcher.accessed(reader: 1, blob: "b", block: 0, blockCount: 100), [1, 2, 3, 4])
    }

    func testSimulatedSequentialLoadWithPrefetchHitsAlmostAlways() {
        var simulator = PolicySimulator(.s3fifo, capacity: 64)
        var prefetcher = SequentialPrefetcher()
        for block in 0..<1000 {
            simulator.access(k("model", block))
            for ahead in prefetcher.accessed(reader: 0, blob: "model", block: block, blockCount: 1000) {
                simulator.prefetch(k("model", ahead))
            }
        }
        XCTAssertGreaterThan(Double(simulator.hits) / 1000, 0.95)
        XCTAssertEqual(simulator.prefetchedUnused, 0)
    }
}

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
