// Load: many clients reading random tensors through the socket at once —
// zero errors, zero wrong bytes — with throughput and latency recorded.
// WEIGHTCACHE_LOAD_CLIENTS (64) and WEIGHTCACHE_LOAD_SECONDS (5 in CI;
// scripts/soak runs 60).
import Foundation
import Models
import WeightCacheClient
import XCTest

final class LoadTests: XCTestCase {
    func testManyClientsReadRandomTensors() async throws {
        let environment = ProcessInfo.processInfo.environment
        let clients = Int(environment["WEIGHTCACHE_LOAD_CLIENTS"] ?? "") ?? 64
        let seconds = Double(environment["WEIGHTCACHE_LOAD_SECONDS"] ?? "") ?? 5
        let daemon = try await DaemonHarness(tag: "load", settings: ["WEIGHTCACHE_RAM_CACHE_BUDGET_BYTES": "64MiB"])
        let folder = try daemon.pushModel("load@main", bigMiB: 32, shards: 2, seed: 61)
        try daemon.start()
        let info = try daemon.client().preload("load@main")
        // Every tensor of every shard, from the real headers.
        var tensors: [(path: String, range: Range<Int>, bytes: [UInt8])] = []
        for file in info.files where file.path.hasSuffix(".safetensors") {
            let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: folder + "/" + file.path)))
            let length = Int(bytes[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) })
            let header = try JSONSerialization.jsonObject(with: Data(bytes[8..<8 + length])) as! [String: Any]
            for (name, value) in header where name != "__metadata__" {
                let offsets = (value as! [String: Any])["data_offsets"] as! [Int]
                tensors.append((file.path, 8 + length + offsets[0]..<8 + length + offsets[1], bytes))
            }
        }
        XCTAssertGreaterThan(tensors.count, 4)
        let snapshot = tensors
        let failures = Failures()
        let latencies = Samples()
        let bytesRead = Samples()
        let stop = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        let started = ContinuousClock.now
        let group = DispatchGroup()
        for worker in 0..<clients {
            group.enter()
            Thread {
                defer { group.leave() }
                do {
                    let client = try DaemonClient(path: daemon.socket, name: "load-\(worker)")
                    var rng = SystemRandomNumberGenerator()
                    var local: [Double] = []
                    while ContinuousClock.now < stop {
                        let tensor = snapshot[Int.random(in: 0..<snapshot.count, using: &rng)]
                        // A whole tensor, or a random slice of a big one.
                        let slice = min(tensor.range.count, 1 << 20)
                        let start = tensor.range.lowerBound + Int.random(in: 0...(tensor.range.count - slice), using: &rng)
                        let begin = ContinuousClock.now
                        let got = try client.read("load@main", path: tensor.path, offset: UInt64(start), length: slice)
                        let elapsed = (ContinuousClock.now - begin).components
                        local.append(Double(elapsed.seconds) * 1e6 + Double(elapsed.attoseconds) / 1e12)
                        if got != Array(tensor.bytes[start..<start + slice]) { failures.add("worker \(worker): wrong bytes in \(tensor.path) at \(start)") }
                        bytesRead.add([Double(slice)])
                    }
                    latencies.add(local)
                } catch { failures.add("worker \(worker): \(error)") }
            }.start()
        }
        group.wait()
        let elapsed = (ContinuousClock.now - started).components
        let wall = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
        let sorted = latencies.all.sorted()
        XCTAssertEqual(failures.list, [], "errors or wrong bytes under load")
        XCTAssertGreaterThan(sorted.count, clients)
        let p50 = sorted[sorted.count / 2]
        let p99 = sorted[min(sorted.count - 1, sorted.count * 99 / 100)]
        let mib = bytesRead.all.reduce(0, +) / 1_048_576
        print(String(
            format: "load: %d clients, %.0f s: %d reads, %.0f reads/s, %.0f MiB/s, p50 %.0f µs, p99 %.0f µs, 0 errors, 0 wrong bytes",
            clients, wall, sorted.count, Double(sorted.count) / wall, mib / wall, p50, p99))
        XCTAssertEqual(daemon.stop(), 0)
    }
}

final class Samples: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [Double] = []
    func add(_ more: [Double]) { lock.withLock { values += more } }
    var all: [Double] { lock.withLock { values } }
}
