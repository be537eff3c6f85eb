// Staging capacity against the real S3 server: a byte budget, and a real
// filesystem that fills up (a small tmpfs), with pins.
import Foundation
import Integrity
import Logging
import Models
import ObjectStore
@testable import Staging
import Synchronization
import XCTest

#if canImport(Glibc)
import Glibc
#endif

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

    /// An empty models root in a fresh bucket.
    func emptyRepository(_ tag: String) async throws -> ModelRepository {
        let client = try S3Client(settings: sharedServer.settings(), logger: logger)
        let bucket = uniqueBucketName(tag)
        try await client.createBucket(bucket)
        return ModelRepository(store: client.bucket(bucket), prefix: "")
    }

    /// Four models of about 15, 15, 15 and 30 MiB published under one root.
    func publishModels() async throws -> ModelRepository {
        let repository = try await emptyRepository("budget")
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

    /// Making room for one file of a model never evicts another file of the
    /// same model: it used to evict the model's first file to make room for
    /// its last, and report a pull whose snapshot had a dangling link (seen in
    /// the peers benchmark on a nearly full disk). Other models still go.
    func testAPullNeverEvictsItsOwnModel() async throws {
        let repository = try await emptyRepository("own")
        try randomFile(size: 4 << 20, at: directory + "/other/weights.bin")
        for name in ["a", "b", "c"] { try randomFile(size: 10 << 20, at: directory + "/big/\(name).bin") }
        _ = try await repository.push(directory: directory + "/other", as: try ModelReference(parsing: "other"))
        _ = try await repository.push(directory: directory + "/big", as: try ModelReference(parsing: "big"))

        // 28 MiB: the other model (4) and two files of big (20) fit; the third
        // does not. A rate cap (far above what the test needs) makes the pull
        // take its files one after the other, so a and b are whole blobs when
        // c asks for room.
        let staging = Staging(
            directory: directory + "/staging", downloader: ParallelDownloader(maxBytesPerSecond: 1 << 30),
            budget: StagingBudget(budgetBytes: 28 << 20, minFreeBytes: 0), logger: logger)
        _ = try await pull("other", staging, repository)
        do {
            _ = try await pull("big", staging, repository)
            XCTFail("a 30 MiB model was staged within 28 MiB")
        } catch {
            guard case .noSpace(let model, _, _, let detail) = error as? StagingError else { return XCTFail("expected noSpace, got \(error)") }
            XCTAssertEqual(model, "big@main")
            XCTAssertTrue(detail.contains("2 of this model's own"), detail)
        }
        XCTAssertFalse(isStaged("other", staging), "the other, unpinned model should have made room first")
        XCTAssertFalse(isStaged("big", staging))
        // The two files that did land are still there, whole: none was evicted for the third.
        let blobs = try FileManager.default.contentsOfDirectory(atPath: staging.layout.blobs)
        XCTAssertEqual(blobs.count, 2, "\(blobs)")
        for name in ["a", "b", "c"] {
            let digest = try Digest128.ofFile(atPath: directory + "/big/\(name).bin").description
            if blobs.contains(digest) {
                XCTAssertEqual(try Digest128.ofFile(atPath: staging.layout.blob(digest)).description, digest)
            }
        }
    }

    /// Another process's pull knows nothing of this one: it may evict a blob
    /// this pull staged before the snapshot links it. The pull notices and
    /// stages that file again, so its snapshot is whole. (Two `Staging`s on
    /// one directory stand for the two processes: neither sees the other's
    /// kept blobs.)
    func testABlobEvictedByAnotherPullMidPullIsStagedAgain() async throws {
        let repository = try await emptyRepository("restage")
        try randomFile(size: 4 << 20, at: directory + "/pair/a.bin")
        try randomFile(size: 8 << 20, at: directory + "/pair/b.bin")
        try randomFile(size: 4 << 20, at: directory + "/intruder/x.bin")
        _ = try await repository.push(directory: directory + "/pair", as: try ModelReference(parsing: "pair"))
        _ = try await repository.push(directory: directory + "/intruder", as: try ModelReference(parsing: "intruder"))
        let digestA = try Digest128.ofFile(atPath: directory + "/pair/a.bin").description

        // The pull under test: rate-capped, so its files come one after the
        // other (a, then b over about 4 s).
        let first = Staging(
            directory: directory + "/staging",
            downloader: ParallelDownloader(partSize: 1 << 20, concurrency: 2, maxBytesPerSecond: 2 << 20), logger: logger)
        // The other process: 14 MiB of budget. With a's blob (4) and b's
        // partial (8) on disk, its 4 MiB file fits only once a is evicted.
        let second = Staging(
            directory: directory + "/staging", downloader: ParallelDownloader(),
            budget: StagingBudget(budgetBytes: 14 << 20, minFreeBytes: 0), logger: logger)
        let pair = try await repository.resolve(try ModelReference(parsing: "pair"))
        let pulling = Task { try await first.pull(pair, from: repository) }
        let deadline = ContinuousClock.now + .seconds(30)
        while !FileManager.default.fileExists(atPath: first.layout.blob(digestA)) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: first.layout.blob(digestA)), "a never landed")
        _ = try await pull("intruder", second, repository)
        XCTAssertFalse(FileManager.default.fileExists(atPath: first.layout.blob(digestA)), "the other pull did not evict a: nothing tested")

        let report = try await pulling.value
        XCTAssertGreaterThanOrEqual(report.downloaded, 16 << 20, "a was not fetched a second time")
        let snapshot = try first.path(of: try ModelReference(parsing: "pair"))
        for name in ["a.bin", "b.bin"] {
            XCTAssertEqual(
                try Digest128.ofFile(atPath: snapshot + "/" + name), try Digest128.ofFile(atPath: directory + "/pair/" + name), name)
        }
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

    /// Another process fills the disk between the pull's free-space check and
    /// its allocation (real ENOSPC from a real tmpfs): the pull evicts an
    /// unpinned model and tries once more; when nothing is left to evict it
    /// fails with `noSpace`, and no partial or blob of it is left behind.
    func testADiskThatFillsDuringAPullEvictsAndRetriesOnce() async throws {
        let repository = try await publishModels()
        for (name, mib) in [("e", 14), ("g", 10)] {  // one file each: the first free-space check is the big file's
            let path = directory + "/src-" + name
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            var generator = SystemRandomNumberGenerator()
            let bytes = Data((0..<(mib << 20) / 8).flatMap { _ in withUnsafeBytes(of: generator.next() as UInt64, Array.init) })
            try bytes.write(to: URL(fileURLWithPath: path + "/weights.bin"))
            _ = try await repository.push(directory: path, as: try ModelReference(parsing: name))
        }
        let root = directory + "/tmpfs"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=52m", "tmpfs", root])
        mounted = root
        let writer = OtherWriter(file: root + "/other-writer", leaving: 2 << 20)
        var staging = Staging(
            directory: root + "/staging", downloader: ParallelDownloader(),
            budget: StagingBudget(budgetBytes: .max, minFreeBytes: 0), logger: logger)
        staging.puller.freeSpace = FreeSpaceProbe { path in writer.measure(path) }

        _ = try await pull("a", staging, repository)
        try staging.pin(try ModelReference(parsing: "a"))
        _ = try await pull("b", staging, repository)
        let evictionsBefore = try XCTUnwrap(staging.puller.evictions).value

        // e fits beside a and b when checked; then the other writer leaves 2 MiB.
        writer.arm()
        let report = try await pull("e", staging, repository)
        XCTAssertTrue(writer.filled, "the other writer never ran: the test proves nothing")
        // The check saw room enough, so it evicted nothing: b went in the retry.
        XCTAssertGreaterThanOrEqual(writer.seen, 14 << 20, "e did not fit when checked: the retry was not exercised")
        XCTAssertEqual(
            try Digest128.ofFile(atPath: report.snapshot + "/weights.bin"),
            try Digest128.ofFile(atPath: directory + "/src-e/weights.bin"))
        XCTAssertTrue(isStaged("a", staging), "the pinned model was evicted")
        XCTAssertFalse(isStaged("b", staging), "nothing was evicted for the retry")
        XCTAssertGreaterThan(try XCTUnwrap(staging.puller.evictions).value, evictionsBefore)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: staging.layout.partials), [])

        // Everything left is pinned: the retry finds nothing to evict and fails cleanly.
        try staging.pin(try ModelReference(parsing: "e"))
        writer.remove()
        writer.arm()
        let g = try await repository.resolve(try ModelReference(parsing: "g"))
        do {
            _ = try await staging.pull(g, from: repository)
            XCTFail("g was staged on a full disk")
        } catch {
            guard case .noSpace(let model, let file, _, let detail) = error else { return XCTFail("expected noSpace, got \(error)") }
            XCTAssertEqual(model, "g@main")
            XCTAssertEqual(file, "weights.bin")
            XCTAssertTrue(detail.contains("No space left") || detail.contains("\(ENOSPC)"), detail)
        }
        XCTAssertTrue(writer.filled)
        XCTAssertFalse(isStaged("g", staging))
        XCTAssertTrue(isStaged("a", staging) && isStaged("e", staging), "a pinned model was evicted")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: staging.layout.partials), [], "a failed pull left its partial")
        let blobs = try FileManager.default.contentsOfDirectory(atPath: staging.layout.blobs)
        XCTAssertFalse(blobs.contains(try XCTUnwrap(g.manifest.files.first?.xxh3_128)), "g's blob is visible")
        for name in blobs { XCTAssertEqual(try Digest128.ofFile(atPath: staging.layout.blob(name)).description, name) }
    }
}

/// A second writer on the staging filesystem: once armed, at the next
/// free-space check it takes all but `leaving` bytes of the room that check
/// saw, as another process could between that check and the allocation.
private final class OtherWriter: Sendable {
    let file: String
    let leaving: UInt64
    private let state = Mutex((armed: false, filled: false, seen: UInt64(0)))

    init(file: String, leaving: UInt64) {
        self.file = file
        self.leaving = leaving
    }

    func arm() { state.withLock { $0 = (armed: true, filled: false, seen: 0) } }
    var filled: Bool { state.withLock { $0.filled } }
    /// The free space the armed check saw, before the writer took it.
    var seen: UInt64 { state.withLock { $0.seen } }
    func remove() { unlink(file) }

    func measure(_ path: String) -> UInt64 {
        let free = FreeSpaceProbe.statvfs.measure(path)
        state.withLock { state in
            guard state.armed else { return }
            state.armed = false
            state.seen = free
            let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            defer { close(fd) }
            state.filled = fd >= 0 && free > leaving && posix_fallocate(fd, 0, off_t(free - leaving)) == 0
        }
        return free
    }
}
