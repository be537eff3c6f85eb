// kill -9 of the daemon at random moments while it preloads and serves
// reads, restarted each time: no wrong byte is ever served, nothing
// unverified is ever under blobs/, and the interrupted pull resumes instead
// of starting over. WEIGHTCACHE_CRASH_ROUNDS sets the number of kills (5 in
// CI; scripts/soak runs 20).
import Foundation
import Integrity
import WeightCacheClient
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class DaemonCrashTests: XCTestCase {
    func testKillNineDuringPreloadsAndReads() async throws {
        let rounds = Int(ProcessInfo.processInfo.environment["WEIGHTCACHE_CRASH_ROUNDS"] ?? "") ?? 5
        let daemon = try await DaemonHarness(tag: "crash", settings: [
            "WEIGHTCACHE_TRANSFER_MAX_BYTES_PER_SECOND": "8MiB", "WEIGHTCACHE_TRANSFER_PART_SIZE": "4MiB",
            "WEIGHTCACHE_TRANSFER_CONCURRENCY": "4", "WEIGHTCACHE_RAM_CACHE_BUDGET_BYTES": "32MiB",
        ])
        let folder = try daemon.pushModel("crash@main", bigMiB: 96, shards: 1, seed: 41)
        let shard = "model-00001-of-00001.safetensors"
        let expected = try Array(Data(contentsOf: URL(fileURLWithPath: folder + "/" + shard)))
        let digest = try Digest128.ofFile(atPath: folder + "/" + shard).description
        let blockCount = (expected.count + (4 << 20) - 1) / (4 << 20)
        /// Blocks of the shard on NVMe: all once its blob is in, else those its partial's map records.
        func landed() -> Int {
            if FileManager.default.fileExists(atPath: daemon.directory + "/staging/blobs/" + digest) { return blockCount }
            let map = FileManager.default.contents(atPath: daemon.directory + "/staging/partials/\(digest).blocks") ?? Data()
            return map.filter { $0 == 1 }.count
        }
        let wrong = Failures()
        var servedReads = 0
        var progress = 0
        for round in 1...rounds {
            try daemon.start()
            let reads = Counter()
            let stop = Flag()
            let group = DispatchGroup()
            // A preload that the kill interrupts, and readers checking every byte they get.
            Thread { _ = try? DaemonClient(path: daemon.socket).preload("crash@main") }.start()
            for worker in 0..<3 {
                group.enter()
                Thread {
                    defer { group.leave() }
                    guard let client = try? DaemonClient(path: daemon.socket) else { return }
                    var rng = SystemRandomNumberGenerator()
                    while !stop.isSet {
                        let offset = Int.random(in: 0..<expected.count - 1, using: &rng)
                        let length = Int.random(in: 1...min(1 << 20, expected.count - offset), using: &rng)
                        guard let got = try? client.read("crash@main", path: shard, offset: UInt64(offset), length: length) else { return }
                        if got != Array(expected[offset..<offset + got.count]) || got.count != length {
                            wrong.add("round \(round) worker \(worker): wrong bytes at \(offset)+\(length)")
                        }
                        reads.add()
                    }
                }.start()
            }
            usleep(useconds_t.random(in: 300_000...1_500_000))
            kill(daemon.pid, SIGKILL)
            stop.set()
            group.wait()
            _ = daemon.stop(signal: 0, timeout: .seconds(10))  // its wrapper records the exit
            servedReads += reads.value
            // Each run went on from the blocks the previous ones verified.
            let now = landed()
            XCTAssertGreaterThanOrEqual(now, progress, "round \(round): staged blocks went from \(progress) to \(now): the pull started over")
            progress = now
            // Nothing unverified under blobs/: every blob hashes to its name.
            let blobs = daemon.directory + "/staging/blobs"
            for name in (try? FileManager.default.contentsOfDirectory(atPath: blobs)) ?? [] {
                let digest = try Digest128.ofFile(atPath: blobs + "/" + name).description
                XCTAssertEqual(digest, name, "round \(round): blob \(name) is not what its name says")
            }
        }
        XCTAssertEqual(wrong.list, [], "wrong bytes were served")
        XCTAssertGreaterThan(servedReads, 0, "no read was ever served: the test tested nothing")

        // The last start finishes the pull from what the killed ones left.
        try daemon.start()
        let client = try daemon.client()
        _ = try client.preload("crash@main")
        XCTAssertTrue(try client.read("crash@main", path: shard, offset: 0, length: expected.count) == expected)
        XCTAssertGreaterThan(progress, 0, "no kill came after the pull had staged anything: the test tested no resume")
        if progress < blockCount {
            let log = daemon.logText
            let resumed = log.range(of: "resumed ").flatMap { UInt64(log[$0.upperBound...].prefix { $0.isNumber }) } ?? 0
            XCTAssertGreaterThan(resumed, 0, "the final pull started over: \(log)")
        }
        XCTAssertEqual(daemon.stop(), 0)
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.withLock { count } }
    func add() { lock.withLock { count += 1 } }
}

final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}
