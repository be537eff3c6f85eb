// What happens when the S3 server dies under a download.
import Foundation
import Integrity
import Logging
import Models
import ObjectStore
import Staging
import XCTest

final class ServerFaultTests: XCTestCase {
    func testServerKilledMidDownloadFailsFastThenRecovers() async throws {
        let server = S3Server()
        defer {
            server.stop()
            server.removeState()
        }
        let info = try server.start()
        // Few retries with short pauses: the point is a bounded failure.
        let settings = info.settings(
            retry: RetryPolicy(maxRetries: 2, baseDelayMilliseconds: 100, maxDelayMilliseconds: 400),
            lowSpeedTimeoutSeconds: 5)
        let client = try S3Client(settings: settings, logger: Logger(label: "test"))
        let bucket = uniqueBucketName("fault")
        try await client.createBucket(bucket)
        let store = client.bucket(bucket)

        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let source = try randomFile(size: 160 << 20, in: directory)
        try await store.upload("big.bin", fromFile: source, progress: nil)

        // Kill -9 the server once 16 MiB have landed.
        let killed = KillSwitch(threshold: 16 << 20) { server.kill9() }
        let destination = directory + "/out.bin"
        let started = ContinuousClock.now
        do {
            _ = try await ParallelDownloader(partSize: 8 << 20, concurrency: 4)
                .download("big.bin", from: store, to: destination, progress: killed.add)
            XCTFail("the download finished although the server died")
        } catch {
            switch error.underlying {
            case .transport, .invalidResponse: break
            default: XCTFail("expected a transport error, got \(error)")
            }
        }
        let elapsed = ContinuousClock.now - started
        XCTAssertTrue(killed.fired, "the server was never killed")
        XCTAssertLessThan(elapsed, .seconds(30), "failing took \(elapsed)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: destination), "a failed download left its destination")
        XCTAssertFalse(FileManager.default.fileExists(atPath: destination + ".partial"), "a failed download left a partial")

        // Restarted on the same data, the same download succeeds. The S3 port
        // opens before the volume server has re-registered (reads answer 500
        // for a few seconds), so wait until one byte of the object reads back.
        _ = try server.start()
        let deadline = ContinuousClock.now + .seconds(60)
        while (try? await store.get("big.bin", range: 0..<1)) == nil {
            XCTAssertLessThan(ContinuousClock.now, deadline, "the restarted server never served the object")
            if ContinuousClock.now > deadline { return }
            try await Task.sleep(for: .milliseconds(500))
        }
        let result = try await ParallelDownloader(partSize: 8 << 20, concurrency: 4)
            .download("big.bin", from: store, to: destination)
        XCTAssertEqual(result.object.size, 160 << 20)
        XCTAssertEqual(try Digest128.ofFile(atPath: destination), try Digest128.ofFile(atPath: source))
    }
}

extension ServerFaultTests {
    /// The server killed (-9) in the middle of a pull: the pull fails with a
    /// typed store error, nothing reaches blobs/; restarted, the next pull
    /// resumes from the blocks already verified instead of starting over.
    func testServerKilledMidPullThenThePullResumes() async throws {
        let server = S3Server()
        defer {
            server.stop()
            server.removeState()
        }
        let info = try server.start()
        let settings = info.settings(
            retry: RetryPolicy(maxRetries: 2, baseDelayMilliseconds: 100, maxDelayMilliseconds: 400), lowSpeedTimeoutSeconds: 5)
        let logger = Logger(label: "test")
        let client = try S3Client(settings: settings, logger: logger)
        let bucket = uniqueBucketName("pullkill")
        try await client.createBucket(bucket)
        let repository = ModelRepository(store: client.bucket(bucket), prefix: "models")
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try runProcess("/usr/bin/env", [
            "python3", repositoryRoot + "/scripts/make-test-model.py", directory + "/model", "--big-mib", "128", "--shards", "1",
        ])
        let reference = try ModelReference(parsing: "kill/model@main")
        _ = try await repository.push(directory: directory + "/model", as: reference)
        let resolved = try await repository.resolve(reference)
        let staging = Staging(
            directory: directory + "/staging", downloader: ParallelDownloader(partSize: 4 << 20, concurrency: 4), logger: logger)

        let killed = KillSwitch(threshold: 32 << 20) { server.kill9() }
        do {
            _ = try await staging.pull(resolved, from: repository, progress: killed.add)
            XCTFail("the pull finished although the server died")
        } catch {
            guard case .store = error else { return XCTFail("expected a store error, got \(error)") }
        }
        XCTAssertTrue(killed.fired)
        let blobs = (try? FileManager.default.contentsOfDirectory(atPath: directory + "/staging/blobs")) ?? []
        let shard = try XCTUnwrap(resolved.manifest.files.first { $0.path.hasSuffix(".safetensors") })
        XCTAssertFalse(blobs.contains(shard.xxh3_128!), "a half-pulled file reached blobs/")

        _ = try server.start()
        let deadline = ContinuousClock.now + .seconds(60)
        while (try? await repository.store.get(repository.key(of: shard, in: reference), range: 0..<1)) == nil {
            if ContinuousClock.now > deadline { return XCTFail("the restarted server never served the object") }
            try await Task.sleep(for: .milliseconds(500))
        }
        let report = try await staging.pull(resolved, from: repository)
        XCTAssertGreaterThan(report.resumed, 0, "the second pull started over")
        XCTAssertLessThan(report.downloaded, shard.size, "the second pull downloaded the whole file again")
        let snapshot = try staging.path(of: reference)
        XCTAssertEqual(
            try Digest128.ofFile(atPath: snapshot + "/" + shard.path), try Digest128.ofFile(atPath: directory + "/model/" + shard.path))
    }
}

/// Calls `action` once, from the progress callback, when `threshold` bytes have landed.
final class KillSwitch: @unchecked Sendable {
    private let lock = NSLock()
    private var bytes: Int64 = 0
    private var done = false
    private let threshold: Int64
    private let action: () -> Void

    init(threshold: Int64, action: @escaping () -> Void) {
        self.threshold = threshold
        self.action = action
    }

    var fired: Bool { lock.withLock { done } }

    var add: ProgressHandler {
        { [self] delta in
            let fire = lock.withLock { () -> Bool in
                bytes += delta
                guard !done && bytes >= threshold else { return false }
                done = true
                return true
            }
            if fire { action() }
        }
    }
}
