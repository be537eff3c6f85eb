// A real `weightcache serve` process on a temporary Unix socket, against the
// shared SeaweedFS server with a bucket of its own.
import Foundation
import Logging
import Models
import ObjectStore
import UnixSocket
import WeightCacheClient
import Wire
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class DaemonHarness: @unchecked Sendable {
    static let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        .appendingPathComponent("weightcache").path

    let directory: String
    let bucket: String
    let socket: String
    var settings: [String: String]
    private(set) var pid: Int32 = 0
    /// The daemon's --log-level.
    var logLevel = "info"
    private(set) var runs = 0

    /// A fresh directory (staging, socket, logs) and bucket; nothing started yet.
    init(tag: String, settings extra: [String: String] = [:]) async throws {
        directory = try temporaryDirectory()
        chmod(directory, 0o755)  // tests that connect as another user need to reach the socket
        bucket = uniqueBucketName(tag)
        socket = directory + "/wc.sock"
        settings = [
            "AWS_ENDPOINT_URL": sharedServer.endpoint, "AWS_ACCESS_KEY_ID": sharedServer.accessKey,
            "AWS_SECRET_ACCESS_KEY": sharedServer.secretKey, "AWS_REGION": sharedServer.region,
            "WEIGHTCACHE_MODELS": "s3://\(bucket)/models", "WEIGHTCACHE_STAGING_DIRECTORY": directory + "/staging",
            "WEIGHTCACHE_SOCKET_PATH": socket, "WEIGHTCACHE_RAM_CACHE_BUDGET_BYTES": "128MiB",
            "WEIGHTCACHE_DAEMON_DRAIN_TIMEOUT_SECONDS": "3",
        ].merging(extra) { $1 }
        let client = try S3Client(settings: sharedServer.settings(), logger: Logger(label: "test"))
        try await client.createBucket(bucket)
    }

    deinit {
        if pid > 0 && kill(pid, 0) == 0 { kill(pid, SIGKILL) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Generates a model with scripts/make-test-model.py and pushes it; returns its folder.
    @discardableResult
    func pushModel(_ reference: String, bigMiB: Int, shards: Int = 2, seed: Int) throws -> String {
        let folder = directory + "/src-\(seed)"
        if !FileManager.default.fileExists(atPath: folder) {
            try runProcess("/usr/bin/env", [
                "python3", repositoryRoot + "/scripts/make-test-model.py", folder, "--big-mib", "\(bigMiB)",
                "--shards", "\(shards)", "--seed", "\(seed)",
            ])
        }
        try runProcess(Self.binary, ["push", folder, reference, "--config", repositoryRoot + "/config.json"], environment: settings)
        return folder
    }

    var log: String { directory + "/serve-\(runs).log" }
    var exitFile: String { directory + "/serve-\(runs).exit" }

    /// Starts the daemon and waits until it answers on its socket.
    func start(extra: [String: String] = [:]) throws {
        runs += 1
        // A shell waits for the daemon and writes its exit status: the daemon
        // is not our child, so this is how the test learns it.
        try runProcess(
            "/bin/sh",
            ["-c", "(\"$0\" \"$@\" >'\(log)' 2>&1 </dev/null; echo $? >'\(exitFile)') >/dev/null 2>&1 &",
             Self.binary, "serve", "--config", repositoryRoot + "/config.json", "--log-level", logLevel, "--set", "socket.path=\(socket)"],
            environment: settings.merging(extra) { $1 })
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if let client = try? DaemonClient(path: socket) {
                _ = client
                pid = daemonPID()
                XCTAssertGreaterThan(pid, 0, "daemon pid not found")
                return
            }
            if FileManager.default.fileExists(atPath: exitFile) { break }
            usleep(50_000)
        }
        throw CommandFailure(command: "weightcache serve", output: (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    /// The pid of the daemon serving `socket` (from /proc: the one whose command line names it).
    func daemonPID() -> Int32 {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = Int32(entry), let raw = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
            let arguments = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            if arguments.contains("serve") && arguments.contains("socket.path=\(socket)") && arguments.first?.hasSuffix("weightcache") == true {
                return pid
            }
        }
        return 0
    }

    /// Sends `signal` and waits for the exit status the wrapper shell records.
    func stop(signal: Int32 = SIGTERM, timeout: Duration = .seconds(20)) -> Int32? {
        kill(pid, signal)
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let text = try? String(contentsOfFile: exitFile, encoding: .utf8),
                let status = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                return status
            }
            usleep(50_000)
        }
        return nil
    }

    func client() throws -> DaemonClient { try DaemonClient(path: socket, name: "test") }

    /// Open descriptors of the daemon process.
    func descriptorCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    var logText: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
}

/// Reads `count` whole frames from a raw connection (5 s per wait).
func readFrames(_ socket: UnixSocket, count: Int) throws -> [Frame] {
    var decoder = FrameDecoder(maxFrameSize: 64 << 20)
    var frames: [Frame] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while frames.count < count {
        guard try socket.poll(events: Int16(POLLIN), timeoutMilliseconds: 5000) else { throw SocketError.closed }
        let n = try buffer.withUnsafeMutableBytes { try socket.receive(into: $0) }
        guard n > 0 else { throw SocketError.closed }
        decoder.append(buffer[0..<n])
        while let frame = try decoder.next() { frames.append(frame) }
    }
    return frames
}

/// The file's NVMe state once it is staged, or whatever it is after `timeout`
/// (a background pull lands it while the test goes on).
func stagedState(
    _ client: DaemonClient, _ model: String, _ path: String, timeout: Duration = .seconds(60)
) throws -> FileInfo {
    let deadline = ContinuousClock.now + timeout
    while try client.stat(model, path: path).nvme != .staged && ContinuousClock.now < deadline { usleep(50_000) }
    return try client.stat(model, path: path)
}
