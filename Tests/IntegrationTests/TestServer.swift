// The real SeaweedFS S3 server the integration tests talk to.
//
// `scripts/test.sh` (and so CI) starts one and exports WEIGHTCACHE_TEST_S3_*;
// when those are missing, the first test that needs a server starts one
// itself through the same script and stops it when the test process exits.
// Tests that kill the server start their own (`S3Server`).
import Foundation
import ObjectStore
import XCTest

#if canImport(Glibc)
import Glibc
#endif

let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// Endpoint and keys of a running server.
struct ServerInfo: Sendable {
    var endpoint: String
    var accessKey: String
    var secretKey: String
    var region: String
    /// https://localhost:PORT, with a self-signed certificate...
    var httpsEndpoint: String?
    /// ...whose PEM file this is.
    var caBundle: String?

    var credentials: S3Credentials { S3Credentials(accessKeyID: accessKey, secretAccessKey: secretKey) }

    func settings(
        retry: RetryPolicy = RetryPolicy(maxRetries: 3, baseDelayMilliseconds: 50, maxDelayMilliseconds: 1000),
        credentials: S3Credentials? = nil, partSize: UInt64 = 8 << 20, concurrency: Int = 8,
        lowSpeedTimeoutSeconds: Int = 30
    ) -> S3Settings {
        S3Settings(
            endpoint: endpoint, region: region, addressing: .path, credentials: credentials ?? self.credentials,
            retry: retry, connectTimeoutMilliseconds: 2000, lowSpeedTimeoutSeconds: lowSpeedTimeoutSeconds,
            partSize: partSize, concurrency: concurrency)
    }

    /// Parses the `export NAME=value` lines that scripts/s3-server.sh prints.
    init?(exports: String) {
        var values: [String: String] = [:]
        for line in exports.split(separator: "\n") where line.hasPrefix("export ") {
            let assignment = line.dropFirst(7)
            guard let eq = assignment.firstIndex(of: "=") else { continue }
            values[String(assignment[..<eq])] = String(assignment[assignment.index(after: eq)...])
        }
        self.init(values)
    }

    init?(_ values: [String: String]) {
        guard let endpoint = values["WEIGHTCACHE_TEST_S3_ENDPOINT"], let access = values["WEIGHTCACHE_TEST_S3_ACCESS_KEY"],
            let secret = values["WEIGHTCACHE_TEST_S3_SECRET_KEY"]
        else { return nil }
        self.init(endpoint: endpoint, accessKey: access, secretKey: secret, region: values["WEIGHTCACHE_TEST_S3_REGION"] ?? "us-east-1")
        httpsEndpoint = values["WEIGHTCACHE_TEST_S3_HTTPS_ENDPOINT"]
        caBundle = values["WEIGHTCACHE_TEST_S3_CA_BUNDLE"]
    }

    init(endpoint: String, accessKey: String, secretKey: String, region: String) {
        self.endpoint = endpoint
        self.accessKey = accessKey
        self.secretKey = secretKey
        self.region = region
    }
}

/// A server this test process controls: started, killed, restarted, stopped
/// through scripts/s3-server.sh with its own state directory.
final class S3Server: Sendable {
    let stateDirectory: String

    init(stateDirectory: String = NSTemporaryDirectory() + "wc-s3-\(UUID().uuidString.prefix(8))") {
        self.stateDirectory = stateDirectory
    }

    func start() throws -> ServerInfo {
        let output = try run(["start", stateDirectory])
        guard let info = ServerInfo(exports: output) else {
            throw CommandFailure(command: "s3-server.sh start", output: output)
        }
        return info
    }

    func stop() { _ = try? run(["stop", stateDirectory]) }

    /// SIGKILL, as a crash or an OOM kill would.
    func kill9() {
        if let text = try? String(contentsOfFile: stateDirectory + "/weed.pid", encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
            kill(pid, SIGKILL)
            // Not our child (setsid), so poll until it is gone.
            for _ in 0..<100 where kill(pid, 0) == 0 { usleep(50_000) }
        }
    }

    func removeState() { try? FileManager.default.removeItem(atPath: stateDirectory) }

    private func run(_ arguments: [String]) throws -> String {
        try runProcess("/bin/bash", [repositoryRoot + "/scripts/s3-server.sh"] + arguments)
    }
}

struct CommandFailure: Error, CustomStringConvertible {
    var command: String
    var output: String
    var description: String { "\(command) failed: \(output)" }
}

/// Runs a program to completion through the shell; throws with its output if
/// it exits non-zero.
@discardableResult
func runProcess(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> String {
    let (status, output) = runProcessStatus(executable, arguments, environment: environment)
    guard status == 0 else {
        throw CommandFailure(command: ([executable] + arguments).joined(separator: " "), output: output)
    }
    return output
}

/// Runs a program through the shell: its exit status and its output (stdout
/// and stderr together). popen/pclose rather than Foundation's Process, whose
/// waitUntilExit was seen to hang on Linux after a sibling was SIGKILLed.
func runProcessStatus(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:]
) -> (status: Int32, output: String) {
    func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
    let assignments = environment.map { "\($0.key)=\(quote($0.value))" }.joined(separator: " ")
    let command = (assignments.isEmpty ? "" : "env \(assignments) ")
        + ([executable] + arguments).map(quote).joined(separator: " ") + " 2>&1 </dev/null"
    guard let pipe = popen(command, "r") else { return (-1, "popen failed") }
    var output = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, pipe) }
        if n == 0 { break }
        output += buffer[0..<n]
    }
    let status = pclose(pipe)
    let exit = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return (exit, String(decoding: output, as: UTF8.self))
}

/// The state directory of a server this process started, stopped at exit.
nonisolated(unsafe) private var ownServerDirectory: String?

/// The shared server: the one the environment names, else one started now.
let sharedServer: ServerInfo = {
    if let info = ServerInfo(ProcessInfo.processInfo.environment) { return info }
    let server = S3Server()
    do {
        let info = try server.start()
        ownServerDirectory = server.stateDirectory
        atexit {
            if let directory = ownServerDirectory {
                let server = S3Server(stateDirectory: directory)
                server.stop()
                server.removeState()
            }
        }
        return info
    } catch {
        fatalError("could not start the test S3 server: \(error)")
    }
}()

/// A lowercase bucket name no other test uses.
func uniqueBucketName(_ tag: String) -> String {
    "wc-\(tag)-\(UUID().uuidString.lowercased().prefix(12))"
}

/// A file of `size` random bytes in a fresh temporary directory.
func randomFile(size: Int, in directory: String) throws -> String {
    try randomFile(size: size, at: directory + "/random-\(size).bin")
}

/// A file of `size` random bytes at `path` (its folder made if needed).
@discardableResult
func randomFile(size: Int, at path: String) throws -> String {
    try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    let source = open("/dev/urandom", O_RDONLY)
    defer { close(fd); close(source) }
    var remaining = size
    var buffer = [UInt8](repeating: 0, count: 1 << 20)
    while remaining > 0 {
        let n = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, min(remaining, $0.count)) }
        precondition(n > 0)
        _ = buffer.withUnsafeBytes { write(fd, $0.baseAddress, n) }
        remaining -= n
    }
    return path
}

func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "wc-test-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Open file descriptors of this process: a test that ends with more than it
/// began with leaked one.
func openDescriptorCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}
