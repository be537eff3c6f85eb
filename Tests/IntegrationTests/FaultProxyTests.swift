// The object store misbehaving, on purpose: scripts/faultproxy.py sits
// between weightcache and SeaweedFS and answers 503 SlowDown / 500, resets
// connections, stalls and truncates bodies and flips bytes at the rates a
// test sets. Pulls and read-through reads must come out right under ~10%
// faults, fail with a typed error within the retry budget under 100%, and
// never accept a corrupted body.
import Foundation
import Integrity
import Logging
import ObjectStore
import Synchronization
import WeightCacheClient
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// A running faultproxy.py: its port, its rates (changed live), its counts.
final class FaultProxy {
    let directory: String
    let port: Int
    private let pid: Int32

    init(upstream: String, directory: String) throws {
        self.directory = directory
        try Data("{}".utf8).write(to: URL(fileURLWithPath: directory + "/rates.json"))
        let host = upstream.replacingOccurrences(of: "http://", with: "")
        let output = try runProcess("/bin/sh", [
            "-c", "python3 \"$0\" --upstream \"$1\" --rates-file \"$2\" --stats \"$3\" --seed 7 >\"$4\" 2>\"$5\" </dev/null & echo $!",
            repositoryRoot + "/scripts/faultproxy.py", host, directory + "/rates.json", directory + "/stats.json",
            directory + "/proxy.out", directory + "/proxy.err",
        ])
        pid = Int32(output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        var found: Int?
        for _ in 0..<100 where found == nil {
            usleep(50_000)
            let text = (try? String(contentsOfFile: directory + "/proxy.out", encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("faultproxy listening on ") }) {
                found = Int(line.split(separator: ":").last ?? "")
            }
        }
        guard let found else { throw CommandFailure(command: "faultproxy.py", output: (try? String(contentsOfFile: directory + "/proxy.err", encoding: .utf8)) ?? "") }
        port = found
    }

    deinit { kill(pid, SIGTERM) }

    var endpoint: String { "http://127.0.0.1:\(port)" }

    /// Sets the fault rates (0..1 each: error, reset, stall, truncate, flip; stall_seconds).
    func set(_ rates: [String: Double]) throws {
        let data = try JSONSerialization.data(withJSONObject: rates)
        try data.write(to: URL(fileURLWithPath: directory + "/rates.tmp"))
        rename(directory + "/rates.tmp", directory + "/rates.json")
        usleep(100_000)
    }

    /// Requests the proxy has seen.
    func requests() -> Int {
        guard let data = FileManager.default.contents(atPath: directory + "/stats.json"),
            let stats = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return 0 }
        return stats["requests"] as? Int ?? 0
    }

    /// How many of each fault were injected so far.
    func faults() -> [String: Int] {
        guard let data = FileManager.default.contents(atPath: directory + "/stats.json"),
            let stats = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return [:] }
        return stats["faults"] as? [String: Int] ?? [:]
    }
}

final class FaultProxyTests: XCTestCase {
    let config = ["--config", repositoryRoot + "/config.json"]

    func testPullsUnderInjectedFaults() async throws {
        let daemon = try await DaemonHarness(tag: "faults")  // its bucket and a model, pushed straight to the server
        let folder = try daemon.pushModel("faulty@main", bigMiB: 48, shards: 2, seed: 71)
        let proxy = try FaultProxy(upstream: sharedServer.endpoint, directory: daemon.directory)
        var settings = daemon.settings
        settings["AWS_ENDPOINT_URL"] = proxy.endpoint
        settings["WEIGHTCACHE_TRANSFER_RETRIES"] = "8"
        settings["WEIGHTCACHE_TRANSFER_RETRY_BASE_DELAY_MILLISECONDS"] = "20"
        settings["WEIGHTCACHE_TRANSFER_RETRY_MAX_DELAY_MILLISECONDS"] = "200"
        settings["WEIGHTCACHE_TRANSFER_LOW_SPEED_TIMEOUT_SECONDS"] = "1"
        settings["WEIGHTCACHE_TRANSFER_PART_SIZE"] = "4MiB"
        func pull(_ staging: String) -> (status: Int32, output: String) {
            var environment = settings
            environment["WEIGHTCACHE_STAGING_DIRECTORY"] = daemon.directory + "/" + staging
            return runProcessStatus(DaemonHarness.binary, ["pull", "faulty@main"] + config, environment: environment)
        }

        // About 10% of GETs go wrong, every kind of fault: the pull still lands every byte right.
        try proxy.set(["error": 0.04, "reset": 0.02, "truncate": 0.02, "flip": 0.03, "stall": 0.01, "stall_seconds": 3])
        let good = pull("staging-good")
        XCTAssertEqual(good.status, 0, good.output)
        let snapshot = good.output.split(separator: "\n").last.map(String.init) ?? ""
        for name in try FileManager.default.contentsOfDirectory(atPath: folder) where name.hasSuffix(".safetensors") {
            XCTAssertEqual(
                try Digest128.ofFile(atPath: snapshot + "/" + name), try Digest128.ofFile(atPath: folder + "/" + name), name)
        }
        let injected = proxy.faults()
        XCTAssertGreaterThan(injected.values.reduce(0, +), 0, "no fault was injected: \(injected)")

        // Every GET fails: a typed error (exit 6, the store), within the retry budget.
        try proxy.set(["error": 1])
        let started = ContinuousClock.now
        let failed = pull("staging-failed")
        XCTAssertEqual(failed.status, 6, failed.output)
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(30))
        XCTAssertTrue(failed.output.contains("SlowDown") || failed.output.contains("InternalError"), failed.output)

        // Every body corrupted: refused (exit 2: here the manifest itself fails its
        // checksum, fetched three times), nothing under blobs/.
        try proxy.set(["flip": 1])
        let corrupt = pull("staging-corrupt")
        XCTAssertEqual(corrupt.status, 2, corrupt.output)
        XCTAssertTrue(corrupt.output.contains("checksum mismatch") || corrupt.output.contains("block"), corrupt.output)
        let blobs = (try? FileManager.default.contentsOfDirectory(atPath: daemon.directory + "/staging-corrupt/blobs")) ?? []
        XCTAssertTrue(blobs.filter { $0.count == 32 && !$0.hasPrefix(".") }.allSatisfy { name in
            // Only small files that came through unflipped (no GET body to flip: none here) could be there.
            (try? Digest128.ofFile(atPath: daemon.directory + "/staging-corrupt/blobs/" + name).description) == name
        })
    }

    /// The daemon reading through to a store that misbehaves a quarter of the
    /// time: every byte it serves is right.
    func testReadThroughUnderInjectedFaults() async throws {
        let daemon = try await DaemonHarness(tag: "rtfaults")
        let folder = try daemon.pushModel("rt@main", bigMiB: 24, shards: 1, seed: 72)
        let proxy = try FaultProxy(upstream: sharedServer.endpoint, directory: daemon.directory)
        // A quarter of GETs go wrong: with few requests (six blocks, the
        // manifest, the background pull's parts) some must.
        try proxy.set(["error": 0.1, "reset": 0.05, "truncate": 0.05, "flip": 0.05])
        daemon.settings["AWS_ENDPOINT_URL"] = proxy.endpoint
        daemon.settings["WEIGHTCACHE_TRANSFER_RETRIES"] = "8"
        daemon.settings["WEIGHTCACHE_TRANSFER_RETRY_BASE_DELAY_MILLISECONDS"] = "20"
        daemon.settings["WEIGHTCACHE_TRANSFER_RETRY_MAX_DELAY_MILLISECONDS"] = "200"
        try daemon.start()
        let client = try daemon.client()
        let shard = "model-00001-of-00001.safetensors"
        let expected = try Array(Data(contentsOf: URL(fileURLWithPath: folder + "/" + shard)))
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<40 {
            let offset = Int.random(in: 0..<expected.count - 1, using: &rng)
            let length = min(expected.count - offset, Int.random(in: 1...(2 << 20), using: &rng))
            let got = try client.read("rt@main", path: shard, offset: UInt64(offset), length: length)
            XCTAssertTrue(got == Array(expected[offset..<offset + length]), "wrong bytes at \(offset)+\(length)")
        }
        XCTAssertGreaterThan(proxy.requests(), 0, "the daemon did not go through the proxy")
        XCTAssertGreaterThan(proxy.faults().values.reduce(0, +), 0, "\(proxy.requests()) requests, no fault")
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// A store far away hands a body over in small chunks as they arrive (16
    /// KiB from the proxy's pacing); the download gathers them and writes a
    /// file 256 KiB at a time, not one pwrite per chunk. Seen through the
    /// `WriteObserver`, which is told of each write: before the change it saw
    /// 16 KiB writes, so this test fails on the old code.
    func testSlowBodiesAreWrittenInLargePieces() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let proxy = try FaultProxy(upstream: sharedServer.endpoint, directory: directory)
        let near = try S3Client(settings: sharedServer.settings(), logger: Logger(label: "test"))
        let bucket = uniqueBucketName("coalesce")
        try await near.createBucket(bucket)
        let size = (1 << 20) + 12345  // four whole pieces and a short last one
        let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
        try await near.bucket(bucket).put("slow", bytes: bytes)
        try proxy.set(["connection_rate": 4_000_000])  // ~0.3 s for the body, in small chunks

        final class Writes: WriteObserver {
            let seen = Mutex<[(offset: UInt64, count: Int)]>([])
            func wrote(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) {
                seen.withLock { $0.append((offset, bytes.count)) }
            }
        }
        let writes = Writes()
        let path = directory + "/out.bin"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var settings = sharedServer.settings()
        settings.endpoint = proxy.endpoint
        let far = try S3Client(settings: settings, logger: Logger(label: "test"))
        try await far.bucket(bucket).download(
            "slow", range: 0..<UInt64(size), into: OutputFile(descriptor: fd, path: path, observer: writes), at: 0,
            ifMatch: nil, progress: nil)

        XCTAssertEqual(Array(try Data(contentsOf: URL(fileURLWithPath: path))), bytes)
        let seen = writes.seen.withLock { $0 }
        XCTAssertEqual(seen.map(\.offset), seen.indices.map { UInt64(seen[..<$0].reduce(0) { $0 + $1.count }) }, "in order, no gap")
        XCTAssertEqual(seen.reduce(0) { $0 + $1.count }, size)
        XCTAssertEqual(seen.dropLast().map(\.count), Array(repeating: 256 << 10, count: 4), "writes: \(seen.map(\.count))")
        XCTAssertEqual(seen.last?.count, 12345)
        XCTAssertGreaterThan(proxy.requests(), 0, "the download did not go through the proxy")
    }
    /// The disk fills at a download's last, gathered write (the flush when
    /// the transfer completes): a typed error naming pwrite and ENOSPC, the
    /// progress reported for the part taken back to exactly zero (the bytes
    /// that did not land were never counted), and what landed before intact.
    func testAFullDiskAtTheLastGatheredWriteIsATypedErrorAndProgressBalances() async throws {
        try XCTSkipUnless(getuid() == 0, "mounts a tmpfs")
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let small = directory + "/small"
        try FileManager.default.createDirectory(atPath: small, withIntermediateDirectories: true)
        // 256 pages: room for the four whole pieces (1 MiB), none for the last one.
        try runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", small])
        defer { _ = runProcessStatus("/bin/umount", ["-l", small]) }

        let proxy = try FaultProxy(upstream: sharedServer.endpoint, directory: directory)
        let near = try S3Client(settings: sharedServer.settings(), logger: Logger(label: "test"))
        let bucket = uniqueBucketName("fullflush")
        try await near.createBucket(bucket)
        let size = (1 << 20) + 12345
        let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 11) }
        try await near.bucket(bucket).put("tail", bytes: bytes)
        try proxy.set(["connection_rate": 4_000_000])  // small chunks: the last 12345 bytes are gathered

        let path = small + "/out.bin"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        let reported = Mutex<Int64>(0)
        var settings = sharedServer.settings()
        settings.endpoint = proxy.endpoint
        let far = try S3Client(settings: settings, logger: Logger(label: "test"))
        do {
            try await far.bucket(bucket).download(
                "tail", range: 0..<UInt64(size), into: OutputFile(descriptor: fd, path: path), at: 0, ifMatch: nil,
                progress: { n in reported.withLock { $0 += n } })
            XCTFail("a download onto a full disk succeeded")
        } catch .localIO(let syscall, let failedPath, let code) {
            XCTAssertEqual(syscall, "pwrite")
            XCTAssertEqual(failedPath, path)
            XCTAssertEqual(code, ENOSPC)
        } catch {
            XCTFail("expected localIO(pwrite, ENOSPC), got \(error)")
        }
        XCTAssertEqual(reported.withLock { $0 }, 0, "progress not given back exactly")
        let landed = Array(try Data(contentsOf: URL(fileURLWithPath: path)).prefix(1 << 20))
        XCTAssertEqual(landed, Array(bytes.prefix(1 << 20)), "the whole pieces before the full disk")
        XCTAssertGreaterThan(proxy.requests(), 0, "the download did not go through the proxy")
    }
}
