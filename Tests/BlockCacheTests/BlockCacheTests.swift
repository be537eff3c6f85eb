import Foundation
import Integrity
import TestSupport
import XCTest

@testable import BlockCache

final class BlockCacheTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "wc-cache-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A staged-like blob: a file of `size` random bytes and its block digests.
    func makeBlob(_ name: String, size: Int, blockSize: Int) throws -> (BlobSource, [UInt8]) {
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: size)
        bytes.withUnsafeMutableBytes { raw in
            let words = raw.bindMemory(to: UInt64.self)
            for i in words.indices { words[i] = generator.next() }
        }
        let path = directory + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let digests = stride(from: 0, to: size, by: blockSize).map { start in
            xxh3_64(Array(bytes[start..<min(size, start + blockSize)]))
        }
        return (BlobSource(digest: name, path: path, size: UInt64(size), blockSize: blockSize, blockDigests: digests), bytes)
    }

    func testSixteenThreadsUnderPressureGetExactBytes() throws {
        let blockSize = 256 << 10
        let cache = try BlockCache(budgetBytes: UInt64(8 * blockSize), blockSize: blockSize, policy: .s3fifo)
        let blobs = try (0..<3).map { try makeBlob("blob\($0)", size: 3 * (1 << 20) + 4321, blockSize: blockSize) }
        let failures = Failures()
        let deadline = Date().addingTimeInterval(3)
        // Sixteen real threads (concurrentPerform would run only as many as there are cores).
        let group = DispatchGroup()
        for thread in 0..<16 {
            group.enter()
            Thread {
                defer { group.leave() }
            var generator = SystemRandomNumberGenerator()
            var reads = 0
            while Date() < deadline {
                let (source, bytes) = blobs[Int.random(in: 0..<3, using: &generator)]
                let start = UInt64.random(in: 0..<source.size, using: &generator)
                let end = min(source.size, start + UInt64.random(in: 1...(600 << 10), using: &generator))
                do {
                    let got = try cache.read(source, range: start..<end)
                    if got != Array(bytes[Int(start)..<Int(end)]) { failures.add("thread \(thread): wrong bytes at \(start)") }
                } catch {
                    failures.add("thread \(thread): \(error)")
                }
                let stats = cache.statistics
                if stats.residentBytes > stats.budgetBytes { failures.add("over budget: \(stats)") }
                reads += 1
            }
            if reads == 0 { failures.add("thread \(thread) read nothing") }
            }.start()
        }
        group.wait()
        XCTAssertEqual(failures.all, [])
        let stats = cache.statistics
        XCTAssertLessThanOrEqual(stats.residentBytes, 8 * UInt64(blockSize))
        XCTAssertGreaterThan(stats.evictions, 0, "the budget never bit: \(stats)")
        XCTAssertGreaterThan(stats.hits, 0)
    }

    func testPinnedBlobSurvivesPressure() throws {
        let blockSize = 64 << 10
        for kind in PolicyKind.allCases {
            let cache = try BlockCache(budgetBytes: UInt64(10 * blockSize), blockSize: blockSize, policy: kind, readAheadBlocks: 0)
            let (hot, hotBytes) = try makeBlob("hot-\(kind)", size: 4 * blockSize, blockSize: blockSize)
            let (cold, _) = try makeBlob("cold-\(kind)", size: 64 * blockSize, blockSize: blockSize)
            cache.pin(blob: hot.digest)
            XCTAssertEqual(try cache.read(hot, range: 0..<hot.size), hotBytes)
            _ = try cache.read(cold, range: 0..<cold.size)  // a scan 16x the budget
            for block in 0..<4 { XCTAssertTrue(cache.isResident(blob: hot.digest, block: block), "\(kind) block \(block)") }
            let misses = cache.statistics.misses
            XCTAssertEqual(try cache.read(hot, range: 0..<hot.size), hotBytes)
            XCTAssertEqual(cache.statistics.misses, misses, "\(kind): a pinned block had to be reloaded")
            cache.unpin(blob: hot.digest)
            // A new working set read over and over displaces it (a one-off scan
            // would not under S3-FIFO: that is its point).
            for _ in 0..<6 { _ = try cache.read(cold, range: 0..<UInt64(12 * blockSize)) }
            XCTAssertFalse((0..<4).allSatisfy { cache.isResident(blob: hot.digest, block: $0) }, "\(kind): unpin had no effect")
        }
    }

    func testFlippedByteOnNVMeIsNeverReturned() throws {
        let blockSize = 64 << 10
        let reported = Failures()
        // No read-ahead: this is about the read path (read-ahead would find the bad block too).
        let cache = try BlockCache(
            budgetBytes: UInt64(8 * blockSize), blockSize: blockSize, policy: .lru, readAheadBlocks: 0
        ) { blob, block in
            reported.add("\(blob)#\(block)")
        }
        let (source, bytes) = try makeBlob("rotten", size: 5 * blockSize, blockSize: blockSize)
        var corrupted = bytes
        corrupted[3 * blockSize + 17] ^= 0x01
        try Data(corrupted).write(to: URL(fileURLWithPath: source.path!))

        XCTAssertEqual(try cache.read(source, range: 0..<UInt64(2 * blockSize)), Array(bytes[0..<2 * blockSize]))
        for _ in 0..<2 {  // the bad block is not cached by the first failure
            XCTAssertThrowsError(try cache.read(source, range: UInt64(3 * blockSize)..<UInt64(3 * blockSize + 100))) { error in
                guard case .integrity(let blob, let block, _, _) = error as? CacheError else { return XCTFail("\(error)") }
                XCTAssertEqual(blob, "rotten")
                XCTAssertEqual(block, 3)
            }
        }
        XCTAssertEqual(reported.all, ["rotten#3", "rotten#3"])
        XCTAssertEqual(cache.statistics.integrityFailures, 2)
        XCTAssertFalse(cache.isResident(blob: "rotten", block: 3))
    }

    /// Blocks of a staged blob go from the disk straight into the arena with
    /// O_DIRECT: the page cache does not hold the same bytes a second time.
    /// The exact bytes either way, an unaligned tail included; a file that
    /// ends early is caught as before.
    func testBlocksLoadFromNVMeWithoutThePageCache() throws {
        let blockSize = 1 << 20
        let (source, bytes) = try makeBlob("direct", size: 8 * blockSize + 4321, blockSize: blockSize)
        let fd = open(source.path!, O_RDONLY)
        XCTAssertEqual(fsync(fd), 0)
        XCTAssertEqual(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0)
        close(fd)
        guard try Residency.fraction(ofFile: source.path!) < 0.05 else { throw XCTSkip("the page cache kept the file after DONTNEED") }

        let cache = try BlockCache(budgetBytes: UInt64(16 * blockSize), blockSize: blockSize, policy: .lru, readAheadBlocks: 0)
        XCTAssertEqual(try cache.read(source, range: 0..<source.size), bytes)
        XCTAssertEqual(cache.statistics.misses, 9)
        let resident = try Residency.fraction(ofFile: source.path!)
        XCTAssertLessThan(resident, 0.05, "the blob went through the page cache (\(resident) resident)")

        // Cut short behind the cache's back: the last blocks are missing, not served.
        XCTAssertEqual(truncate(source.path!, off_t(6 * blockSize + 100)), 0)
        let fresh = try BlockCache(budgetBytes: UInt64(16 * blockSize), blockSize: blockSize, policy: .lru, readAheadBlocks: 0)
        XCTAssertEqual(try fresh.read(source, range: 0..<UInt64(6 * blockSize)), Array(bytes[0..<6 * blockSize]))
        XCTAssertThrowsError(try fresh.read(source, range: UInt64(6 * blockSize)..<UInt64(6 * blockSize + 10))) { error in
            guard case .integrity(_, let block, _, let actual) = error as? CacheError else { return XCTFail("\(error)") }
            XCTAssertEqual(block, 6)
            XCTAssertTrue(actual.contains("100 of \(blockSize) bytes"), actual)
        }
    }

    /// A blob not staged yet: blocks come from its remote fetch, are checked
    /// like staged ones, counted as bytes from the store, and a bad remote
    /// block is refused without blaming (quarantining) anything on NVMe.
    func testRemoteOriginBlocksAreVerifiedAndCounted() throws {
        let blockSize = 64 << 10
        let reported = Failures()
        let cache = try BlockCache(budgetBytes: UInt64(8 * blockSize), blockSize: blockSize, policy: .lru, readAheadBlocks: 0) { blob, block in
            reported.add("\(blob)#\(block)")
        }
        let (staged, bytes) = try makeBlob("remote", size: 3 * blockSize + 10, blockSize: blockSize)
        let fetches = Failures()
        func remote(corruptBlock: Int?) -> BlobSource {
            BlobSource(
                digest: staged.digest,
                origin: .remote { (block: Int, target: UnsafeMutableRawBufferPointer) throws(CacheError) -> Void in
                    fetches.add("\(block)")
                    var chunk = Array(bytes[block * blockSize..<block * blockSize + target.count])
                    if block == corruptBlock { chunk[5] ^= 0xFF }
                    chunk.withUnsafeBytes { target.copyMemory(from: $0) }
                },
                size: staged.size, blockSize: blockSize, blockDigests: staged.blockDigests)
        }
        XCTAssertThrowsError(try cache.read(remote(corruptBlock: 1), range: UInt64(blockSize)..<UInt64(blockSize + 5))) {
            guard case .integrity(_, 1, _, _) = $0 as? CacheError else { return XCTFail("\($0)") }
        }
        XCTAssertEqual(reported.all, [], "a bad remote block must not quarantine the staged blob")
        let all = try cache.read(remote(corruptBlock: nil), range: 0..<staged.size)
        XCTAssertEqual(all, bytes)
        XCTAssertEqual(cache.statistics.bytesFromStore, staged.size)
        XCTAssertEqual(cache.statistics.bytesFromNVMe, 0)
        // Now resident: the staged origin is not even asked.
        XCTAssertEqual(try cache.read(staged, range: 0..<staged.size), bytes)
        XCTAssertEqual(cache.statistics.bytesFromNVMe, 0)
        XCTAssertEqual(cache.residentBytes(blob: staged.digest, size: staged.size), staged.size)
        XCTAssertEqual(cache.drop(blob: staged.digest), 4)
        XCTAssertEqual(cache.residentBytes(blob: staged.digest, size: staged.size), 0)
    }

    /// Several blocks of a remote blob in one request per run: a run's blocks
    /// are each checked, a block corrupted in the run is fetched again on its
    /// own, a failed run falls back to single blocks, resident blocks are not
    /// asked for, and runs stop at `maxRun` blocks.
    func testRemoteRunsAreCheckedBlockByBlockAndFallBack() throws {
        let blockSize = 64 << 10
        let cache = try BlockCache(budgetBytes: UInt64(16 * blockSize), blockSize: blockSize, policy: .lru, readAheadBlocks: 0) { _, _ in }
        let (staged, bytes) = try makeBlob("runs", size: 9 * blockSize + 10, blockSize: blockSize)
        let log = Failures()
        func remote(corruptInRun: Int? = nil, failRuns: Bool = false) -> BlobSource {
            var source = BlobSource(
                digest: staged.digest,
                origin: .remote { (block: Int, target: UnsafeMutableRawBufferPointer) throws(CacheError) -> Void in
                    log.add("block \(block)")
                    bytes[block * blockSize..<block * blockSize + target.count].withUnsafeBytes { target.copyMemory(from: $0) }
                },
                size: staged.size, blockSize: blockSize, blockDigests: staged.blockDigests)
            source.fetchRun = { (blocks: Range<Int>, targets: [UnsafeMutableRawBufferPointer], ahead: Bool) throws(CacheError) -> Void in
                log.add("run \(blocks.lowerBound)..<\(blocks.upperBound)")
                if failRuns { throw .origin(blob: "runs", block: blocks.lowerBound, reason: "connection reset") }
                for (block, target) in zip(blocks, targets) {
                    XCTAssertEqual(target.count, min(blockSize, bytes.count - block * blockSize))
                    bytes[block * blockSize..<block * blockSize + target.count].withUnsafeBytes { target.copyMemory(from: $0) }
                    if block == corruptInRun { target[7] ^= 0xFF }
                }
            }
            return source
        }
        try cache.warm(remote(corruptInRun: 2), blocks: 1..<4)
        XCTAssertEqual(log.all, ["run 1..<4", "block 2"], "the corrupted block was not fetched again on its own")
        XCTAssertEqual(cache.residentBytes(blob: staged.digest, size: staged.size), UInt64(3 * blockSize))
        try cache.warm(remote(), blocks: 0..<10, maxRun: 4)  // 1..<4 resident: runs 0, 4..<8, 8..<10
        XCTAssertEqual(Array(log.all.dropFirst(2)), ["run 0..<1", "run 4..<8", "run 8..<10"])
        XCTAssertEqual(try cache.read(remote(), range: 0..<staged.size), bytes)
        XCTAssertEqual(cache.drop(blob: staged.digest), 10)
        let before = log.all.count
        try cache.warm(remote(failRuns: true), blocks: 0..<3)
        XCTAssertEqual(Array(log.all.dropFirst(before)), ["run 0..<3", "block 0", "block 1", "block 2"])
        XCTAssertEqual(try cache.read(staged, range: 0..<UInt64(3 * blockSize)), Array(bytes[0..<3 * blockSize]))
    }

    func testReadAheadLoadsTheNextBlocksOfASequentialReader() throws {
        let blockSize = 64 << 10
        let cache = try BlockCache(budgetBytes: UInt64(32 * blockSize), blockSize: blockSize, policy: .s3fifo, readAheadBlocks: 8)
        let (source, bytes) = try makeBlob("sequential", size: 64 * blockSize, blockSize: blockSize)
        _ = try cache.read(source, range: 0..<UInt64(blockSize))
        _ = try cache.read(source, range: UInt64(blockSize)..<UInt64(2 * blockSize))
        // Read-ahead runs in the background: wait (bounded) until it has brought block 5 in.
        let deadline = Date().addingTimeInterval(5)
        while !cache.isResident(blob: source.digest, block: 5) && Date() < deadline { usleep(1000) }
        XCTAssertTrue(cache.isResident(blob: source.digest, block: 5), "read-ahead never loaded block 5")
        let missesBefore = cache.statistics.misses
        for block in 2..<64 {
            usleep(2000)  // a reader that does some work per block, as an inference loader does
            let range = UInt64(block * blockSize)..<UInt64((block + 1) * blockSize)
            XCTAssertEqual(try cache.read(source, range: range), Array(bytes[Int(range.lowerBound)..<Int(range.upperBound)]))
        }
        let stats = cache.statistics
        XCTAssertGreaterThan(stats.prefetchedUsed, 40, "\(stats)")
        XCTAssertLessThan(stats.misses - missesBefore, 20, "read-ahead did not keep ahead: \(stats)")

        // A random reader gets no deep read-ahead (the window collapses on jumps).
        let random = try BlockCache(budgetBytes: UInt64(32 * blockSize), blockSize: blockSize, policy: .lru, readAheadBlocks: 8)
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<40 {
            let block = Int.random(in: 0..<64, using: &generator)
            _ = try random.read(source, range: UInt64(block * blockSize)..<UInt64(block * blockSize + 10))
        }
        usleep(200_000)
        let randomStats = random.statistics
        XCTAssertLessThan(randomStats.prefetchedUsed + randomStats.prefetchedWasted + randomStats.residentBlocks, 40 * 4, "\(randomStats)")
    }

    /// Read-ahead of a blob that is not staged yet fetches runs of
    /// `runBlocks` blocks, up to `requests` at once: one block at a time
    /// capped a sequential reader at one store connection's rate. Each
    /// request here waits (at most 2 s) until another is in flight, so one
    /// at a time shows as a peak of 1.
    func testRemoteReadAheadFetchesRunsSeveralAtOnce() throws {
        let blockSize = 64 << 10
        let cache = try BlockCache(
            budgetBytes: UInt64(64 * blockSize), blockSize: blockSize, policy: .lru, readAheadBlocks: 8,
            remoteReadAhead: RemoteReadAhead(requests: 2, runBlocks: 2))
        let (staged, bytes) = try makeBlob("ahead", size: 40 * blockSize + 10, blockSize: blockSize)
        let probe = RequestProbe()
        var source = BlobSource(
            digest: staged.digest,
            origin: .remote { (block: Int, target: UnsafeMutableRawBufferPointer) throws(CacheError) -> Void in
                bytes[block * blockSize..<block * blockSize + target.count].withUnsafeBytes { target.copyMemory(from: $0) }
            },
            size: staged.size, blockSize: blockSize, blockDigests: staged.blockDigests)
        source.fetchRun = { (blocks: Range<Int>, targets: [UnsafeMutableRawBufferPointer], ahead: Bool) throws(CacheError) -> Void in
            XCTAssertTrue(ahead, "only read-ahead asks for runs here: the reader reads one block at a time")
            probe.begin(blocks)
            defer { probe.end() }
            for (block, target) in zip(blocks, targets) {
                bytes[block * blockSize..<block * blockSize + target.count].withUnsafeBytes { target.copyMemory(from: $0) }
            }
        }
        for block in 0..<41 {
            let range = UInt64(block * blockSize)..<min(staged.size, UInt64((block + 1) * blockSize))
            XCTAssertEqual(try cache.read(source, range: range), Array(bytes[Int(range.lowerBound)..<Int(range.upperBound)]))
        }
        XCTAssertEqual(probe.peak, 2, "read-ahead requests to the store ran one at a time, or more than asked")
        XCTAssertFalse(probe.runs.isEmpty)
        XCTAssertTrue(probe.runs.allSatisfy { (1...2).contains($0.count) }, "\(probe.runs)")
        let stats = cache.statistics
        XCTAssertGreaterThan(stats.prefetchedUsed, 20, "\(stats)")
        XCTAssertEqual(stats.integrityFailures, 0)

        // A reader with other reads in flight is its own read-ahead: the
        // cache reads ahead of it one block at a time, no runs beside its own.
        cache.drop(blob: staged.digest)
        XCTAssertEqual(cache.residentBytes(blob: staged.digest, size: staged.size), 0)
        let runsBefore = probe.runs.count
        let usedBefore = cache.statistics.prefetchedUsed
        for block in 0..<41 {
            let range = UInt64(block * blockSize)..<min(staged.size, UInt64((block + 1) * blockSize))
            var got = [UInt8](repeating: 0, count: Int(range.count))
            try got.withUnsafeMutableBytes { try cache.read(source, range: range, into: $0, reader: 1, pipelined: true) }
            XCTAssertEqual(got, Array(bytes[Int(range.lowerBound)..<Int(range.upperBound)]))
        }
        XCTAssertEqual(probe.runs.count, runsBefore, "read-ahead for a pipelining reader went in runs")
        XCTAssertGreaterThan(cache.statistics.prefetchedUsed, usedBefore, "no read-ahead at all for a pipelining reader")
    }

    func testBadRequestsAreTypedErrors() throws {
        let cache = try BlockCache(budgetBytes: 1 << 20, blockSize: 64 << 10, policy: .lru)
        let (source, _) = try makeBlob("small", size: 1000, blockSize: 64 << 10)
        XCTAssertThrowsError(try cache.read(source, range: 900..<1001))
        var other = source
        other.blockSize = 128 << 10
        XCTAssertThrowsError(try cache.read(other, range: 0..<10))
        XCTAssertThrowsError(try BlockCache(budgetBytes: 1000, blockSize: 64 << 10, policy: .lru))
    }
}

final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var messages: [String] = []
    func add(_ message: String) { lock.withLock { if messages.count < 20 { messages.append(message) } } }
    var all: [String] { lock.withLock { messages } }
}

/// Counts requests in flight; until two have overlapped, each waits (at most
/// 2 s) for another to start, so that loads that could overlap do.
final class RequestProbe: @unchecked Sendable {
    private let condition = NSCondition()
    private var inFlight = 0
    private var highest = 0
    private var seen: [Range<Int>] = []

    func begin(_ blocks: Range<Int>) {
        condition.lock()
        defer { condition.unlock() }
        seen.append(blocks)
        inFlight += 1
        highest = max(highest, inFlight)
        condition.broadcast()
        let deadline = Date().addingTimeInterval(2)
        while highest < 2 && condition.wait(until: deadline) {}
    }

    func end() { condition.withLock { inFlight -= 1 } }
    var peak: Int { condition.withLock { highest } }
    var runs: [Range<Int>] { condition.withLock { seen } }
}
