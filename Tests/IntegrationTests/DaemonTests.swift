// The daemon, end to end: a real `weightcache serve` on a Unix socket, the
// real SeaweedFS behind it, and clients speaking the protocol.
import Foundation
import Integrity
import UnixSocket
import WeightCacheClient
import Wire
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class DaemonTests: XCTestCase {
    /// The Swift client splits long reads on block boundaries, as the Python
    /// one does: no two requests need the same block.
    func testReadPiecesAreCutOnBlockBoundaries() {
        let mib = 1 << 20
        func pieces(_ offset: UInt64, _ length: Int, step: Int, block: Int) -> [Int] {
            var out: [Int] = []
            var done = 0
            while done < length {
                let n = DaemonClient.pieceLength(at: offset + UInt64(done), remaining: length - done, maxReadLength: step, blockSize: block)
                out.append(n)
                done += n
            }
            return out
        }
        XCTAssertEqual(pieces(10240, 20 * mib, step: 8 * mib, block: 4 * mib), [8 * mib - 10240, 8 * mib, 4 * mib + 10240])
        XCTAssertEqual(pieces(0, 9 * mib, step: 8 * mib, block: 4 * mib), [8 * mib, mib])
        XCTAssertEqual(pieces(123, 2500, step: 1000, block: 4096), [877, 1000, 623])  // no whole block fits: cut at the step
        XCTAssertEqual(pieces(7, 30, step: 10, block: 3), [2, 9, 9, 9, 1])  // 9 = the whole blocks that fit in 10
    }

    func original(_ folder: String, _ path: String) throws -> [UInt8] {
        Array(try Data(contentsOf: URL(fileURLWithPath: folder + "/" + path)))
    }

    /// Preload over the socket with progress, then every file by `read` and by
    /// `open` (the passed descriptor) equals the original; SIGTERM exits 0 and
    /// removes the socket.
    func testPreloadThenReadAndOpenEveryFile() async throws {
        let daemon = try await DaemonHarness(tag: "daemon")
        let folder = try daemon.pushModel("tiny@main", bigMiB: 24, seed: 11)
        try daemon.start()
        let client = try daemon.client()
        XCTAssertEqual(client.hello.version, 1)

        var updates: [(UInt64, UInt64)] = []
        let info = try client.preload("tiny@main", tier: .nvme, pin: true) { updates.append(($0, $1)) }
        XCTAssertTrue(info.pinned)
        XCTAssertFalse(info.snapshot.isEmpty)
        XCTAssertFalse(updates.isEmpty, "no progress frames")
        let total = info.files.reduce(0) { $0 + $1.size }
        XCTAssertEqual(updates.last?.0, total)
        XCTAssertEqual(updates.last?.1, total)

        for file in info.files {
            XCTAssertEqual(file.nvme, .staged, file.path)
            let expected = try original(folder, file.path)
            XCTAssertEqual(file.size, UInt64(expected.count))
            let viaRead = try client.read("tiny@main", path: file.path, offset: 0, length: expected.count)
            XCTAssertTrue(viaRead == expected, "read of \(file.path) differs")

            let opened = try client.open("tiny@main", path: file.path)
            defer { close(opened.descriptor) }
            var viaOpen = [UInt8](repeating: 0, count: expected.count)
            let n = viaOpen.withUnsafeMutableBytes { pread(opened.descriptor, $0.baseAddress, $0.count, 0) }
            XCTAssertEqual(n, expected.count)
            XCTAssertTrue(viaOpen == expected, "open of \(file.path) differs")
            // Read-only: the client cannot change the staged blob.
            XCTAssertEqual(write(opened.descriptor, "x", 1), -1)
        }
        // Bad input gets typed errors, and the connection stays usable.
        XCTAssertThrowsError(try client.resolve("nope@main")) { XCTAssertEqual(code($0), .notFound) }
        XCTAssertThrowsError(try client.read("tiny@main", path: "../../etc/passwd", offset: 0, length: 10)) { XCTAssertEqual(code($0), .invalidArgument) }
        XCTAssertThrowsError(try client.read("tiny@main", path: "/etc/passwd", offset: 0, length: 10)) { XCTAssertEqual(code($0), .invalidArgument) }
        XCTAssertThrowsError(try client.read("../x", path: "config.json", offset: 0, length: 10)) { XCTAssertEqual(code($0), .invalidArgument) }
        XCTAssertThrowsError(try client.read("tiny@main", path: "config.json", offset: 1 << 40, length: 10)) { XCTAssertEqual(code($0), .invalidArgument) }
        XCTAssertThrowsError(try client.evict("tiny@main")) { XCTAssertEqual(code($0), .invalidArgument) }  // pinned
        let models = try client.list()
        XCTAssertEqual(models.map(\.model), ["tiny@main"])
        XCTAssertEqual(models.first?.nvmeBytes, total)
        XCTAssertTrue(models.first?.pinned ?? false)
        let stats = try JSONSerialization.jsonObject(with: Data(try client.stats().utf8)) as? [String: Any]
        XCTAssertNotNil(stats?["ram"])
        // Every request of this connection is counted, by operation and by error code.
        let requests = stats?["requests"] as? [String: Any]
        let step = Int(client.hello.maxReadLength)
        let reads = info.files.reduce(0) { $0 + (Int($1.size) + step - 1) / step } + 4
        XCTAssertEqual(requests?["byOperation"] as? [String: Int], [
            "preload": 1, "read": reads, "open": info.files.count, "resolve": 1, "evict": 1, "list": 1, "stats": 1,
        ])
        XCTAssertEqual(requests?["read"] as? Int, reads - 4, "only reads that returned bytes count as reads")
        XCTAssertEqual(requests?["errorsByCode"] as? [String: Int], ["invalid-argument": 5, "not-found": 1])

        XCTAssertEqual(daemon.stop(), 0, daemon.logText)
        XCTAssertFalse(FileManager.default.fileExists(atPath: daemon.socket), "socket left behind")
    }

    /// A model nobody preloaded: reads are served block by block from the
    /// store (read-through) and are right; the pull, throttled to take about
    /// five seconds, completes behind them. Order of events, not wall time:
    /// the first bytes arrive while the file is still not staged.
    func testColdReadIsServedThroughFromTheStore() async throws {
        let daemon = try await DaemonHarness(tag: "cold", settings: [
            "WEIGHTCACHE_TRANSFER_MAX_BYTES_PER_SECOND": "8MiB", "WEIGHTCACHE_TRANSFER_PART_SIZE": "4MiB",
        ])
        let folder = try daemon.pushModel("cold/model@v1", bigMiB: 40, shards: 1, seed: 12)
        try daemon.start()
        let client = try daemon.client()
        let shard = "model-00001-of-00001.safetensors"
        let expected = try original(folder, shard)
        XCTAssertEqual(try client.stat("cold/model@v1", path: shard).nvme, .absent)

        let head = try client.read("cold/model@v1", path: shard, offset: 0, length: 4096)
        XCTAssertEqual(head, Array(expected[0..<4096]))
        XCTAssertNotEqual(try client.stat("cold/model@v1", path: shard).nvme, .staged, "the first bytes waited for the whole file")
        let middle = expected.count / 2
        XCTAssertEqual(try client.read("cold/model@v1", path: shard, offset: UInt64(middle), length: 1 << 20), Array(expected[middle..<middle + (1 << 20)]))
        let tail = try client.read("cold/model@v1", path: shard, offset: UInt64(expected.count - 100), length: 1000)
        XCTAssertEqual(tail, Array(expected[(expected.count - 100)...]), "a read past the end is clipped")
        let stats = try JSONSerialization.jsonObject(with: Data(try client.stats().utf8)) as! [String: Any]
        let ram = stats["ram"] as! [String: Any]
        XCTAssertGreaterThan(ram["bytesFromStore"] as! Int, 0, "the cold reads did not come from the store")

        // The background pull lands the file; reads go on being right.
        XCTAssertEqual(try stagedState(client, "cold/model@v1", shard).nvme, .staged)
        XCTAssertTrue(try client.read("cold/model@v1", path: shard, offset: 0, length: expected.count) == expected)
        // The pull the cold read started let the reads go first.
        XCTAssertTrue(daemon.logText.contains("held back for read-through"), daemon.logText)
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// A model read whole through read-through before its pull starts: the
    /// pull takes the blocks from the RAM tier (checked again) instead of
    /// fetching them a second time, and the staged file is right.
    func testThePullTakesBlocksReadersAlreadyFetched() async throws {
        let daemon = try await DaemonHarness(tag: "donor")
        let folder = try daemon.pushModel("donor@main", bigMiB: 24, shards: 1, seed: 19)
        try daemon.start()
        let client = try daemon.client()
        let shard = "model-00001-of-00001.safetensors"
        let expected = try original(folder, shard)
        XCTAssertTrue(try client.read("donor@main", path: shard, offset: 0, length: expected.count) == expected)
        let info = try stagedState(client, "donor@main", shard)
        XCTAssertEqual(info.nvme, .staged)
        XCTAssertEqual(try Digest128.ofFile(atPath: daemon.directory + "/staging/blobs/" + info.digest).description, info.digest)
        let stats = try JSONSerialization.jsonObject(with: Data(try client.stats().utf8)) as! [String: Any]
        let pulled = (stats["nvme"] as! [String: Any])["bytesFromStore"] as! Int
        XCTAssertLessThan(pulled, expected.count / 2, "the pull fetched the shard again although RAM held it (\(pulled) bytes)")
        XCTAssertTrue(daemon.logText.contains("taken from the RAM tier"), daemon.logText)
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// Another uid (nobody, through setpriv): refused when not listed, served
    /// when listed for reads, refused admin operations unless listed as admin.
    func testAccessControlByPeerUID() async throws {
        let daemon = try await DaemonHarness(tag: "access", settings: ["WEIGHTCACHE_SOCKET_MODE": "0666"])
        try daemon.pushModel("acl@main", bigMiB: 1, shards: 1, seed: 13)
        func asNobody(_ arguments: [String]) -> (status: Int32, output: String) {
            runProcessStatus(
                "/usr/bin/setpriv",
                ["--reuid=nobody", "--regid=nogroup", "--clear-groups", DaemonHarness.binary] + arguments
                    + ["--config", repositoryRoot + "/config.json", "--set", "socket.path=\(daemon.socket)"],
                environment: ["HOME": "/nonexistent"])
        }
        try daemon.start()
        var attrs = stat()
        XCTAssertEqual(stat(daemon.socket, &attrs), 0)
        XCTAssertEqual(attrs.st_mode & 0o777, 0o666, "socket mode is not as configured")
        var run = asNobody(["stats"])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.output.contains("permission-denied"), run.output)
        XCTAssertEqual(daemon.stop(), 0)

        try daemon.start(extra: ["WEIGHTCACHE_ACCESS_READ_USERS": "nobody"])
        run = asNobody(["stats"])
        XCTAssertEqual(run.status, 0, run.output)
        run = asNobody(["preload", "acl@main"])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.output.contains("permission-denied"), run.output)
        XCTAssertEqual(daemon.stop(), 0)

        try daemon.start(extra: ["WEIGHTCACHE_ACCESS_ADMIN_USERS": "nobody"])
        run = asNobody(["preload", "acl@main"])
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// Garbage, half frames, oversized headers, requests before hello and
    /// unknown operations: each gets an error or a closed connection, the
    /// daemon goes on serving, and its descriptor count returns to where it was.
    func testHostileFramesLeakNothing() async throws {
        let daemon = try await DaemonHarness(tag: "garbage")
        let folder = try daemon.pushModel("g@main", bigMiB: 1, shards: 1, seed: 14)
        try daemon.start()
        let good = try daemon.client()
        _ = try good.preload("g@main")
        usleep(300_000)
        let baseline = daemon.descriptorCount()
        XCTAssertGreaterThan(baseline, 0)

        var rng = SystemRandomNumberGenerator()
        let hello = Request.hello(Hello(client: "raw")).frame(request: 1).encoded
        for round in 0..<200 {
            let socket = try UnixSocket.connect(path: daemon.socket)
            var bytes: [UInt8]
            switch round % 5 {
            case 0: bytes = (0..<Int.random(in: 1...512, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 1: bytes = Array(hello.prefix(Int.random(in: 1..<hello.count, using: &rng)))  // half a frame, then gone
            case 2: bytes = [0xFF, 0xFF, 0xFF, 0x7F, 1, 0, 0, 0, 0, 0, 0, 0]  // a 2 GiB frame announced
            case 3: bytes = Request.stats.frame(request: 5).encoded  // no hello first
            default: bytes = hello + Frame(type: 0x7E, request: 2, payload: [1, 2, 3]).encoded  // unknown operation
            }
            try? socket.send(bytes)
            if round % 5 == 4 {
                // The unknown operation is answered and the connection stays open.
                let replies = try readFrames(socket, count: 2)
                XCTAssertEqual(try Response(decoding: replies[1]), .error(.unknownOperation, "unknown request type 126"))
                try socket.send(Request.stats.frame(request: 3).encoded)
                guard case .stats = try Response(decoding: try readFrames(socket, count: 1)[0]) else { return XCTFail("no stats reply") }
            } else if round % 5 == 2 || round % 5 == 3 {
                let reply = try Response(decoding: try readFrames(socket, count: 1)[0])
                guard case .error(let code, _) = reply else { return XCTFail("expected an error, got \(reply)") }
                XCTAssertTrue([.malformed, .helloRequired].contains(code))
            }
            socket.close()
        }
        // Still serving, right bytes.
        let expected = try original(folder, "config.json")
        XCTAssertEqual(try good.read("g@main", path: "config.json", offset: 0, length: expected.count), expected)
        XCTAssertEqual(try daemon.client().read("g@main", path: "config.json", offset: 0, length: expected.count), expected)
        // Every hostile connection's descriptor was closed.
        let deadline = ContinuousClock.now + .seconds(10)
        while daemon.descriptorCount() > baseline + 1 && ContinuousClock.now < deadline { usleep(100_000) }
        XCTAssertLessThanOrEqual(daemon.descriptorCount(), baseline + 1, "descriptors leaked")
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// SIGTERM while a preload is pulling: exit 0, socket removed; the next
    /// start resumes the parked pull by itself, from the blocks already staged.
    func testSigtermDuringPreloadParksAndTheNextStartResumes() async throws {
        let daemon = try await DaemonHarness(tag: "park", settings: [
            "WEIGHTCACHE_TRANSFER_CONCURRENCY": "2", "WEIGHTCACHE_TRANSFER_PART_SIZE": "4MiB",
            "WEIGHTCACHE_TRANSFER_MAX_BYTES_PER_SECOND": "8MiB",
        ])
        let folder = try daemon.pushModel("park@main", bigMiB: 64, shards: 1, seed: 15)
        try daemon.start()
        let progress = Progress()
        let preload = Thread {
            do {
                let client = try DaemonClient(path: daemon.socket)
                _ = try client.preload("park@main") { done, _ in progress.set(done) }
                progress.finish(nil)
            } catch { progress.finish(error) }
        }
        preload.start()
        let deadline = ContinuousClock.now + .seconds(30)
        while progress.done < 16 << 20 && ContinuousClock.now < deadline { usleep(50_000) }
        XCTAssertGreaterThanOrEqual(progress.done, 16 << 20, "the pull did not start")
        XCTAssertEqual(daemon.stop(), 0, daemon.logText)
        XCTAssertFalse(FileManager.default.fileExists(atPath: daemon.socket))
        // The pull was stopped before the process exited, not left writing.
        XCTAssertTrue(daemon.logText.contains("parked 1 pull(s) for the next start"), daemon.logText)
        // The waiting client heard that the daemon is going away.
        let waitEnd = ContinuousClock.now + .seconds(10)
        while !progress.finished && ContinuousClock.now < waitEnd { usleep(50_000) }
        XCTAssertTrue(progress.finished)
        XCTAssertNotNil(progress.error)

        try daemon.start()
        let client = try daemon.client()
        let shard = "model-00001-of-00001.safetensors"
        XCTAssertEqual(try stagedState(client, "park@main", shard, timeout: .seconds(90)).nvme, .staged, daemon.logText)
        // The file is staged a moment before the pull logs its report.
        let logged = ContinuousClock.now + .seconds(30)
        while !daemon.logText.contains("pulled park@main") && ContinuousClock.now < logged { usleep(50_000) }
        let log = daemon.logText
        XCTAssertTrue(log.contains("resuming the pull of park@main"), log)
        let resumed = log.range(of: "resumed ").flatMap { UInt64(log[$0.upperBound...].prefix { $0.isNumber }) } ?? 0
        XCTAssertGreaterThanOrEqual(resumed, 8 << 20, "the second run did not reuse the first run's blocks: \(log)")
        let expected = try original(folder, shard)
        XCTAssertTrue(try client.read("park@main", path: shard, offset: 0, length: expected.count + 4096) == expected)
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// daemon.preload: the daemon brings the listed model onto its tier in the
    /// background; `weightcache ready` says 1 (not ready) until it is there, then 0.
    func testStartupPreloadGatesReadiness() async throws {
        let daemon = try await DaemonHarness(tag: "ready", settings: [
            "WEIGHTCACHE_TRANSFER_MAX_BYTES_PER_SECOND": "8MiB", "WEIGHTCACHE_TRANSFER_PART_SIZE": "4MiB",
        ])
        try daemon.pushModel("ready@main", bigMiB: 24, shards: 1, seed: 17)
        try daemon.start(extra: ["WEIGHTCACHE_DAEMON_PRELOAD": "ready@main tier=ram pin"])
        func ready() -> (status: Int32, output: String) {
            runProcessStatus(
                DaemonHarness.binary, ["ready", "--config", repositoryRoot + "/config.json", "--set", "socket.path=\(daemon.socket)"])
        }
        let first = ready()
        XCTAssertEqual(first.status, 1, first.output)
        XCTAssertTrue(first.output.contains("ready@main on ram"), first.output)
        let deadline = ContinuousClock.now + .seconds(60)
        var last = first
        while last.status != 0 && ContinuousClock.now < deadline {
            usleep(200_000)
            last = ready()
        }
        XCTAssertEqual(last.status, 0, last.output + daemon.logText)
        // A reference the daemon refuses (invalid-argument) is bad usage for the CLI: exit 64.
        let refused = runProcessStatus(
            DaemonHarness.binary, ["pin", "ready@..", "--config", repositoryRoot + "/config.json", "--set", "socket.path=\(daemon.socket)"])
        XCTAssertEqual(refused.status, 64, refused.output)
        XCTAssertTrue(refused.output.contains("invalid model reference"), refused.output)
        let info = try daemon.client().resolve("ready@main")
        XCTAssertTrue(info.pinned)
        for file in info.files {
            XCTAssertEqual(file.nvme, .staged)
            XCTAssertEqual(file.ramBytes, file.size, "\(file.path) is not all in RAM")
        }
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// The warm set: what was in RAM when the daemon stopped is back in RAM
    /// after the next start, loaded from NVMe before any client asks.
    func testWarmSetIsRestoredAfterARestart() async throws {
        let daemon = try await DaemonHarness(tag: "warm")
        try daemon.pushModel("warm@main", bigMiB: 16, shards: 1, seed: 18)
        try daemon.start()
        let before = try daemon.client().preload("warm@main", tier: .ram)
        let shard = try XCTUnwrap(before.files.first { $0.path.hasSuffix(".safetensors") })
        XCTAssertEqual(shard.ramBytes, shard.size)
        XCTAssertEqual(daemon.stop(), 0)
        let saved = try String(contentsOfFile: daemon.directory + "/staging/warm-set.json", encoding: .utf8)
        XCTAssertTrue(saved.contains(shard.digest), saved)

        try daemon.start()
        let client = try daemon.client()
        let deadline = ContinuousClock.now + .seconds(20)
        while try client.stat("warm@main", path: shard.path).ramBytes < shard.size && ContinuousClock.now < deadline { usleep(100_000) }
        XCTAssertEqual(try client.stat("warm@main", path: shard.path).ramBytes, shard.size, daemon.logText)
        let stats = try JSONSerialization.jsonObject(with: Data(try client.stats().utf8)) as! [String: Any]
        XCTAssertEqual((stats["requests"] as! [String: Any])["read"] as? Int, 0, "the blocks came back without any read")
        XCTAssertTrue(daemon.logText.contains("warm set restored"), daemon.logText)
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// Zero-copy pins: pinning maps and locks the model's staged files
    /// (VmLck of the daemon grows by their size), within ramCache.lockBytes;
    /// a model over the limit is pinned on NVMe only; unpinning unlocks.
    func testPinLocksStagedPagesWithinTheLimit() async throws {
        let daemon = try await DaemonHarness(tag: "mlock", settings: ["WEIGHTCACHE_RAM_CACHE_LOCK_BYTES": "16MiB"])
        try daemon.pushModel("small@main", bigMiB: 4, shards: 1, seed: 19)
        try daemon.pushModel("large@main", bigMiB: 24, shards: 1, seed: 20)
        try daemon.start()
        let client = try daemon.client()
        func locked() throws -> (stats: UInt64, kernel: UInt64) {
            let stats = try JSONSerialization.jsonObject(with: Data(try client.stats().utf8)) as! [String: Any]
            let nvme = stats["nvme"] as! [String: Any]
            let status = try String(contentsOfFile: "/proc/\(daemon.pid)/status", encoding: .utf8)
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmLck:") }!
            let kib = UInt64(line.split(separator: " ", omittingEmptySubsequences: true)[1])!
            return ((nvme["lockedBytes"] as! NSNumber).uint64Value, kib * 1024)
        }
        XCTAssertEqual(try locked().stats, 0)
        let small = try client.preload("small@main", pin: true)
        let smallBytes = small.files.reduce(0) { $0 + $1.size }
        XCTAssertLessThan(smallBytes, 16 << 20)
        var now = try locked()
        XCTAssertEqual(now.stats, smallBytes)
        XCTAssertGreaterThanOrEqual(now.kernel + 4096 * UInt64(small.files.count), smallBytes, "the kernel does not see the pages locked")

        let large = try client.preload("large@main", pin: true)
        XCTAssertTrue(large.pinned)
        XCTAssertGreaterThan(large.files.reduce(0) { $0 + $1.size }, 16 << 20)
        XCTAssertEqual(try locked().stats, smallBytes, "a model over the limit must not be locked")
        XCTAssertTrue(daemon.logText.contains("not locking large@main"), daemon.logText)

        _ = try client.unpin("small@main")
        now = try locked()
        XCTAssertEqual(now.stats, 0)
        XCTAssertLessThan(now.kernel, 1 << 20)
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// GET /metrics on metrics.address: the tiers', the socket's and the S3
    /// client's figures in the Prometheus text format, every name documented.
    func testPrometheusEndpoint() async throws {
        let port = Int.random(in: 20_000...60_000)
        let daemon = try await DaemonHarness(tag: "metrics", settings: ["WEIGHTCACHE_METRICS_ADDRESS": "127.0.0.1:\(port)"])
        let folder = try daemon.pushModel("metrics@main", bigMiB: 4, shards: 1, seed: 23)
        try daemon.start()
        let client = try daemon.client()
        _ = try client.preload("metrics@main", tier: .ram)
        let expected = try Array(Data(contentsOf: URL(fileURLWithPath: folder + "/config.json")))
        XCTAssertEqual(try client.read("metrics@main", path: "config.json", offset: 0, length: expected.count), expected)
        XCTAssertThrowsError(try client.resolve("absent@main"))
        let text = try runProcess("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(port)/metrics"])
        func value(_ series: String) -> Double? {
            text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last!) }
        }
        XCTAssertEqual(value("weightcache_ready"), 1, text)
        XCTAssertGreaterThan(value("weightcache_ram_used_bytes") ?? 0, 0, text)
        XCTAssertGreaterThan(value("weightcache_nvme_bytes_pulled_total") ?? 0, 0, text)
        XCTAssertGreaterThanOrEqual(value("weightcache_nvme_pull_disk_wait_seconds_total") ?? -1, 0, text)
        XCTAssertEqual(value("weightcache_requests_total{operation=\"read\"}"), 1, text)
        XCTAssertEqual(value("weightcache_request_errors_total{code=\"not-found\"}"), 1, text)
        XCTAssertTrue(text.contains("weightcache_s3_request_duration_seconds_bucket{operation=\"GetObject\""), text)
        // Every metric is in docs/metrics.md.
        let docs = try String(contentsOfFile: repositoryRoot + "/docs/metrics.md", encoding: .utf8)
        let names = text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { String($0.split(separator: " ")[2]) }
        XCTAssertGreaterThan(names.count, 20)
        for name in names { XCTAssertTrue(docs.contains("`\(name)`"), "docs/metrics.md lacks \(name)") }
        XCTAssertEqual(runProcessStatus("/usr/bin/curl", ["-sf", "http://127.0.0.1:\(port)/other"]).status, 22)
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// A second daemon on the same staging directory, or on the same socket,
    /// is refused before it touches anything; `verify` will not run beside a
    /// live daemon without --force; a stale socket (kill -9) is replaced.
    func testSecondDaemonAndStaleSocket() async throws {
        let daemon = try await DaemonHarness(tag: "second")
        try daemon.start()
        let config = ["--config", repositoryRoot + "/config.json"]
        var run = runProcessStatus(DaemonHarness.binary, ["serve"] + config, environment: daemon.settings)
        XCTAssertEqual(run.status, 1, run.output)
        XCTAssertTrue(run.output.contains("another weightcache daemon is using"), run.output)
        var elsewhere = daemon.settings
        elsewhere["WEIGHTCACHE_STAGING_DIRECTORY"] = daemon.directory + "/other-staging"
        run = runProcessStatus(DaemonHarness.binary, ["serve"] + config, environment: elsewhere)
        XCTAssertEqual(run.status, 1, run.output)
        XCTAssertTrue(run.output.contains("another process is listening"), run.output)
        XCTAssertEqual(run.output.split(separator: "\n").count, 1, run.output)
        run = runProcessStatus(DaemonHarness.binary, ["verify"] + config, environment: daemon.settings)
        XCTAssertEqual(run.status, 1, run.output)
        XCTAssertTrue(try daemon.client().stats().contains("\"ready\":true"))

        // kill -9 leaves the socket file behind; the next start replaces it.
        kill(daemon.pid, SIGKILL)
        _ = daemon.stop(signal: 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: daemon.socket), "kill -9 should leave a stale socket")
        try daemon.start()
        XCTAssertTrue(try daemon.client().stats().contains("\"ready\":true"))
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// The S3 secret never shows: not in the daemon's logs (at debug level,
    /// through errors from the store), stats, error replies, `weightcache
    /// config`, or its command line (credentials come by environment or file).
    func testSecretsNeverLeak() async throws {
        let daemon = try await DaemonHarness(tag: "secret")
        try daemon.pushModel("secret@main", bigMiB: 1, shards: 1, seed: 24)
        let secret = sharedServer.secretKey
        daemon.logLevel = "trace"
        try daemon.start()
        let client = try daemon.client()
        _ = try client.preload("secret@main")
        var replies: [String] = [try client.stats()]
        for model in ["absent@main", "../escape", "secret@main"] {
            do { _ = try client.read(model, path: "nope.bin", offset: 0, length: 1) } catch { replies.append("\(error)") }
        }
        XCTAssertEqual(daemon.stop(), 0)
        // A daemon whose store refuses it (wrong bucket), for error paths through the S3 client.
        daemon.settings["WEIGHTCACHE_MODELS"] = "s3://no-such-bucket-\(UUID().uuidString.prefix(8).lowercased())/models"
        try daemon.start()
        do { _ = try daemon.client().resolve("secret@main") } catch { replies.append("\(error)") }
        let commandLine = String(decoding: FileManager.default.contents(atPath: "/proc/\(daemon.pid)/cmdline") ?? Data(), as: UTF8.self)
        XCTAssertEqual(daemon.stop(), 0)
        let config = runProcessStatus(DaemonHarness.binary, ["config", "--config", repositoryRoot + "/config.json"], environment: daemon.settings)
        XCTAssertTrue(config.output.contains("<redacted>"), config.output)
        var everything = replies + [commandLine, config.output]
        for run in 1...daemon.runs {
            everything.append((try? String(contentsOfFile: daemon.directory + "/serve-\(run).log", encoding: .utf8)) ?? "")
        }
        XCTAssertGreaterThan(everything.joined().count, 1000, "too little output to prove anything")
        for (index, text) in everything.enumerated() {
            XCTAssertFalse(text.contains(secret), "the secret key appears in output #\(index)")
        }
    }

    /// The operator's CLI against a live daemon: `stats` (table layout and
    /// the JSON schema), `preload --json` (monotone progress, a final event
    /// with the verified size), and the metrics endpoint read by the real
    /// Prometheus parser (prometheus_client), its counters moving after reads.
    func testOperatorCLIAndMetricsParser() async throws {
        let port = Int.random(in: 20_000...60_000)
        let daemon = try await DaemonHarness(tag: "golden", settings: [
            "WEIGHTCACHE_METRICS_ADDRESS": "127.0.0.1:\(port)", "WEIGHTCACHE_TRANSFER_PART_SIZE": "4MiB",
            "WEIGHTCACHE_TRANSFER_MAX_BYTES_PER_SECOND": "32MiB",
        ])
        let folder = try daemon.pushModel("golden@main", bigMiB: 24, shards: 2, seed: 25)
        try daemon.start()
        func cli(_ arguments: [String]) -> (status: Int32, output: String) {
            runProcessStatus(
                DaemonHarness.binary, arguments + ["--config", repositoryRoot + "/config.json", "--set", "socket.path=\(daemon.socket)"],
                environment: daemon.settings)
        }
        // preload --json: one JSON object per line, progress never going back, then done.
        let preload = cli(["preload", "golden@main", "--json"])
        XCTAssertEqual(preload.status, 0, preload.output)
        let events = try preload.output.split(separator: "\n").map {
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any], String($0))
        }
        let progress = events.filter { $0["event"] as? String == "progress" }.compactMap { ($0["done"] as? NSNumber)?.uint64Value }
        XCTAssertFalse(progress.isEmpty, preload.output)
        XCTAssertEqual(progress, progress.sorted(), "progress went backwards")
        let done = try XCTUnwrap(events.last)
        XCTAssertEqual(done["event"] as? String, "done")
        let size = try FileManager.default.contentsOfDirectory(atPath: folder).reduce(UInt64(0)) { total, name in
            var isDirectory: ObjCBool = false
            FileManager.default.fileExists(atPath: folder + "/" + name, isDirectory: &isDirectory)
            guard !isDirectory.boolValue else {
                return total + (try FileManager.default.contentsOfDirectory(atPath: folder + "/" + name)).reduce(0) {
                    $0 + ((try? FileManager.default.attributesOfItem(atPath: folder + "/" + name + "/" + $1)[.size] as? NSNumber)?.uint64Value ?? 0)
                }
            }
            return total + ((try FileManager.default.attributesOfItem(atPath: folder + "/" + name)[.size] as? NSNumber)?.uint64Value ?? 0)
        }
        XCTAssertEqual((done["bytes"] as? NSNumber)?.uint64Value, size)
        XCTAssertEqual(progress.last, size)

        // stats: the table's layout (numbers aside) and the JSON's schema.
        let table = cli(["stats"])
        XCTAssertEqual(table.status, 0, table.output)
        let lines = table.output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        XCTAssertTrue(lines[0].hasPrefix("weightcache 0.1.0, up ") && lines[0].hasSuffix(", ready"), lines[0])
        XCTAssertEqual(lines[2].split(separator: " ").map(String.init), ["TIER", "CAPACITY", "USED", "HIT", "RATIO", "BYTES", "IN", "BYTES", "OUT", "EVICTIONS"])
        XCTAssertTrue(lines[3].hasPrefix("ram ") && lines[4].hasPrefix("nvme "), table.output)
        XCTAssertEqual(lines[3].count, lines[2].count, "columns are not aligned")
        XCTAssertEqual(lines[7].split(separator: " ").map(String.init), ["MODEL", "SIZE", "IN", "RAM", "ON", "NVME", "PINNED", "LAST", "USE"])
        XCTAssertTrue(lines[8].hasPrefix("golden@main ") && lines[8].contains("100.0%"), table.output)
        let json = cli(["stats", "--json"])
        let stats = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any], json.output)
        XCTAssertEqual(Set(stats.keys), ["version", "uptimeSeconds", "ready", "preload", "ram", "nvme", "models", "connections", "requests"])
        XCTAssertEqual(Set((stats["ram"] as! [String: Any]).keys), [
            "budgetBytes", "usedBytes", "hits", "misses", "evictions", "prefetchedUsed", "prefetchedWasted", "integrityFailures",
            "bytesFromNVMe", "bytesFromStore",
        ])
        XCTAssertEqual(Set((stats["nvme"] as! [String: Any]).keys), [
            "directory", "budgetBytes", "usedBytes", "blobs", "pulling", "lockedBytes", "lockBytes", "bytesFromStore",
            "pullDiskWaitSeconds", "evictions",
        ])
        let model = try XCTUnwrap((stats["models"] as? [[String: Any]])?.first)
        XCTAssertTrue(Set(model.keys).isSuperset(of: ["model", "files", "bytes", "nvmeBytes", "ramBytes", "pinned"]))

        // Metrics through the real parser; hits and read bytes move after reads.
        let parse = """
            import sys, urllib.request
            from prometheus_client.parser import text_string_to_metric_families
            text = urllib.request.urlopen(sys.argv[1]).read().decode()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name in ("weightcache_ram_hits_total", "weightcache_read_bytes_total", "weightcache_ready"):
                        print(sample.name, int(sample.value))
            """
        func metrics() throws -> [String: Int] {
            let output = try runProcess("/usr/bin/env", ["python3", "-c", parse, "http://127.0.0.1:\(port)/metrics"])
            var values: [String: Int] = [:]
            for line in output.split(separator: "\n") {
                let parts = line.split(separator: " ")
                if parts.count == 2, let value = Int(parts[1]) { values[String(parts[0])] = value }
            }
            return values
        }
        let before = try metrics()
        XCTAssertEqual(before["weightcache_ready"], 1, "\(before)")
        let client = try daemon.client()
        for _ in 0..<5 { _ = try client.read("golden@main", path: "config.json", offset: 0, length: 16) }
        let after = try metrics()
        XCTAssertGreaterThan(after["weightcache_ram_hits_total"] ?? 0, before["weightcache_ram_hits_total"] ?? 0, "\(before) -> \(after)")
        XCTAssertEqual((after["weightcache_read_bytes_total"] ?? 0) - (before["weightcache_read_bytes_total"] ?? 0), 5 * 16)
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// 32 clients reading random ranges at once for a few seconds: no error,
    /// every byte right (the RAM budget is smaller than the model: evictions happen).
    func testThirtyTwoConcurrentClients() async throws {
        let daemon = try await DaemonHarness(tag: "many", settings: ["WEIGHTCACHE_RAM_CACHE_BUDGET_BYTES": "32MiB"])
        let folder = try daemon.pushModel("many@main", bigMiB: 48, shards: 2, seed: 16)
        try daemon.start()
        let info = try daemon.client().resolve("many@main")
        let files = try info.files.map { ($0.path, try original(folder, $0.path)) }
        let failures = Failures()
        let stop = ContinuousClock.now + .seconds(4)
        let group = DispatchGroup()
        for worker in 0..<32 {
            group.enter()
            Thread {
                defer { group.leave() }
                do {
                    let client = try DaemonClient(path: daemon.socket)
                    var rng = SystemRandomNumberGenerator()
                    var reads = 0
                    while ContinuousClock.now < stop || reads == 0 {
                        let (path, bytes) = files[Int.random(in: 0..<files.count, using: &rng)]
                        let offset = Int.random(in: 0..<bytes.count, using: &rng)
                        let length = Int.random(in: 1...min(2 << 20, bytes.count - offset), using: &rng)
                        let got = try client.read("many@main", path: path, offset: UInt64(offset), length: length)
                        if got != Array(bytes[offset..<offset + length]) { failures.add("worker \(worker): wrong bytes in \(path) at \(offset)+\(length)") }
                        reads += 1
                    }
                } catch { failures.add("worker \(worker): \(error)") }
            }.start()
        }
        group.wait()
        XCTAssertEqual(failures.list, [])
        XCTAssertEqual(daemon.stop(), 0)
    }
}

func code(_ error: any Error) -> ErrorCode? {
    if case ClientError.daemon(let code, _) = error { return code }
    return nil
}

final class Progress: @unchecked Sendable {
    private let lock = NSLock()
    private var value: UInt64 = 0
    private var outcome: (any Error)??
    var done: UInt64 { lock.withLock { value } }
    var finished: Bool { lock.withLock { outcome != nil } }
    var error: (any Error)? { lock.withLock { outcome ?? nil } }
    func set(_ done: UInt64) { lock.withLock { value = done } }
    func finish(_ error: (any Error)?) { lock.withLock { outcome = .some(error) } }
}

final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    var list: [String] { lock.withLock { items } }
    func add(_ text: String) { lock.withLock { items.append(text) } }
}
