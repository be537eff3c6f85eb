// Staging capacity against the real S3 server: a byte budget, and a real
// filesystem that fills up (a small tmpfs), with pins.
import Foundation
import Integrity
import Logging
import Models
import ObjectStore
import Staging
import XCTest

final class BudgetTests: XCTestCase {
    let logger = Logger(label: "test")
    var directory = ""
    var mounted: String?

    override func setUpWithError() throws {
        directory = try temporaryDirectory()
    }

    override func tearDownWithError() throws {
        if let mounted { _ = runProcessStatus("/bin/umount", [mounted]) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Four models of about 15, 15, 15 and 30 MiB published under one root.
    func publishModels() async throws -> ModelRepository {
        let client = try S3Client(settings: sharedServer.settings(), logger: logger)
        let bucket = uniqueBucketName("budget")
        try await client.createBucket(bucket)
        let repository = ModelRepository(store: client.bucket(bucket), prefix: "")
        for (name, mib, seed) in [("a", 14, 1), ("b", 14, 2), ("c", 14, 3), ("d", 29, 4)] {
            let path = directory + "/src-" + name
            try runProcess("/usr/bin/env", [
                "python3", repositoryRoot + "/scripts/make-test-model.py", path, "--big-mib", String(mib), "--shards", "1",
                "--seed", String(seed),
            ])
            _ = try await repository.push(directory: path, as: try ModelReference(parsing: name))
        }
        return repository
    }

    func pull(_ name: String, _ staging: Staging, _ repository: ModelRepository) async throws -> Staging.PullReport {
        try await staging.pull(try await repository.resolve(try ModelReference(parsing: name)), from: repository)
    }

    func isStaged(_ name: String, _ staging: Staging) -> Bool {
        (try? staging.path(of: try ModelReference(parsing: name))) != nil
    }

    /// Evicts least-recently-used unpinned models, keeps pinned ones, and when
    /// even that is not enough fails with a typed error and stages nothing.
    func runEvictionScenario(_ staging: Staging, _ repository: ModelRepository) async throws {
        _ = try await pull("a", staging, repository)
        try staging.pin(try ModelReference(parsing: "a"))
        _ = try await pull("b", staging, repository)
        XCTAssertTrue(isStaged("a", staging) && isStaged("b", staging))

        _ = try await pull("c", staging, repository)  // no room for c beside a and b: b goes
        XCTAssertTrue(isStaged("a", staging), "a pinned model was evicted")
        XCTAssertFalse(isStaged("b", staging), "the least recently used unpinned model stayed")
        XCTAssertTrue(isStaged("c", staging))

        // d fits only if a went too, but a is pinned.
        let d = try await repository.resolve(try ModelReference(parsing: "d"))
        do {
            _ = try await staging.pull(d, from: repository)
            XCTFail("d was staged although only pinned data was left to evict")
        } catch {
            guard case .noSpace(let model, _, _, _) = error else { return XCTFail("expected noSpace, got \(error)") }
            XCTAssertEqual(model, "d@main")
        }
        XCTAssertTrue(isStaged("a", staging), "a pinned model was evicted for d")
        XCTAssertFalse(isStaged("d", staging))
        let partials = try FileManager.default.contentsOfDirectory(atPath: staging.layout.partials)
        XCTAssertEqual(partials, [], "a failed pull left partial data")

        // Unpinned, a may go: d fits.
        try staging.unpin(try ModelReference(parsing: "a"))
        let report = try await pull("d", staging, repository)
        XCTAssertTrue(isStaged("d", staging))
        XCTAssertFalse(isStaged("a", staging))
        let shard = try XCTUnwrap(
            try FileManager.default.contentsOfDirectory(atPath: report.snapshot).first { $0.hasSuffix(".safetensors") })
        XCTAssertEqual(
            try Digest128.ofFile(atPath: report.snapshot + "/" + shard),
            try Digest128.ofFile(atPath: directory + "/src-d/" + shard))
    }

    func testByteBudget() async throws {
        let repository = try await publishModels()
        let staging = Staging(
            directory: directory + "/staging", downloader: ParallelDownloader(),
            budget: StagingBudget(budgetBytes: 40 << 20, minFreeBytes: 0), logger: logger)
        try await runEvictionScenario(staging, repository)
    }

    func testSmallFilesystem() async throws {
        let repository = try await publishModels()
        let root = directory + "/tmpfs"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        // Needs root (as the test suite runs in CI); a refusal fails the test loudly.
        try runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=44m", "tmpfs", root])
        mounted = root
        let staging = Staging(
            directory: root, downloader: ParallelDownloader(),
            budget: StagingBudget(budgetBytes: .max, minFreeBytes: 2 << 20), logger: logger)
        try await runEvictionScenario(staging, repository)
    }

    func testAnOpenBlobStaysReadableAfterEviction() async throws {
        let repository = try await publishModels()
        let staging = Staging(
            directory: directory + "/staging", downloader: ParallelDownloader(),
            budget: StagingBudget(budgetBytes: 40 << 20, minFreeBytes: 0), logger: logger)
        let a = try await pull("a", staging, repository)
        let shard = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: a.snapshot).first { $0.hasSuffix(".safetensors") })
        let reader = try XCTUnwrap(FileHandle(forReadingAtPath: a.snapshot + "/" + shard))
        defer { try? reader.close() }
        _ = try await pull("b", staging, repository)
        _ = try await pull("c", staging, repository)  // evicts a, the least recently used
        XCTAssertFalse(isStaged("a", staging))
        let bytes = try XCTUnwrap(try reader.readToEnd())
        XCTAssertEqual(Digest128.of(Array(bytes)), try Digest128.ofFile(atPath: directory + "/src-a/" + shard))
    }
}
