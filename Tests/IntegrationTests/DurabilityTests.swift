// Deferred durability (staging.durability, Sources/Staging/Durability.swift):
// a pull publishes verified blobs before they are fsynced, with a marker that
// makes a reboot re-verify them. A reboot is simulated by rewriting a marker's
// boot id; lost writes by zeroing part of the blob.
import Foundation
import Integrity
import Logging
import Models
import ObjectStore
import Staging
import WeightCacheClient
import XCTest

final class DurabilityTests: XCTestCase {
    let logger = Logger(label: "test")
    var directory = ""

    override func setUpWithError() throws { directory = try temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: directory) }

    func pulled(_ durability: Durability) async throws -> (Staging, Manifest) {
        let client = try S3Client(settings: sharedServer.settings(), logger: logger)
        let bucket = uniqueBucketName("durable")
        try await client.createBucket(bucket)
        let repository = ModelRepository(store: client.bucket(bucket), prefix: "models")
        let model = directory + "/model"
        try runProcess("/usr/bin/env", ["python3", repositoryRoot + "/scripts/make-test-model.py", model, "--big-mib", "12", "--shards", "2"])
        let reference = try ModelReference(parsing: "durable@main")
        let manifest = try await repository.push(directory: model, as: reference)
        let staging = Staging(
            directory: directory + "/staging", downloader: ParallelDownloader(partSize: 8 << 20, concurrency: 4),
            durability: durability, logger: logger)
        _ = try await staging.pull(try await repository.resolve(reference), from: repository)
        return (staging, manifest)
    }

    var markerDirectory: String { directory + "/staging/unsynced" }
    func markers() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: markerDirectory)) ?? []).sorted() }
    func bootID() throws -> String {
        try String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }
    /// As if the machine had rebooted since the pull.
    func pretendReboot(_ digest: String) throws {
        try "00000000-0000-0000-0000-000000000000\n".write(toFile: markerDirectory + "/" + digest, atomically: true, encoding: .utf8)
    }

    func testDeferredPullMarksBlobsWithTheBootIDAndSettleSyncsThem() async throws {
        let (staging, manifest) = try await pulled(.deferred)
        let digests = Set(manifest.files.compactMap(\.xxh3_128))
        XCTAssertEqual(Set(markers()), digests, "every blob published unsynced has a marker")
        for digest in digests {
            XCTAssertEqual(try String(contentsOfFile: markerDirectory + "/" + digest, encoding: .utf8), try bootID() + "\n")
        }
        let report = try staging.settle(logger: logger)
        XCTAssertEqual(report.synced, digests.count)
        XCTAssertEqual(report.reverified, [])
        XCTAssertEqual(markers(), [], "settled blobs keep no marker")
        XCTAssertEqual(try staging.settle(logger: logger), Staging.SettleReport(), "a second settle has nothing to do")
    }

    func testImmediatePullLeavesNoMarker() async throws {
        let (staging, manifest) = try await pulled(.immediate)
        XCTAssertEqual(markers(), [])
        XCTAssertEqual(Set(try FileManager.default.contentsOfDirectory(atPath: staging.layout.blobs)), Set(manifest.files.compactMap(\.xxh3_128)))
    }

    func testAfterARebootIntactBlobsAreReverifiedAndLostWritesQuarantined() async throws {
        let (staging, manifest) = try await pulled(.deferred)
        let shards = manifest.files.filter { $0.path.hasSuffix(".safetensors") }
        let (intact, damaged) = (shards[0], shards[1])
        for file in manifest.files { try pretendReboot(file.xxh3_128!) }
        // The writes of one blob never reached the disk: a run of zeros where data was.
        let blob = staging.layout.blob(damaged.xxh3_128!)
        chmod(blob, 0o644)
        let zeros = [UInt8](repeating: 0, count: 64 << 10)
        let fd = open(blob, O_WRONLY)
        XCTAssertEqual(pwrite(fd, zeros, zeros.count, 4096), zeros.count)
        close(fd)

        let report = try staging.check(logger: logger, scope: .quick)
        XCTAssertEqual(report.settled.quarantined.count, 1, "\(report)")
        XCTAssertTrue(report.quarantined[0].contains("/quarantine/\(damaged.xxh3_128!)."), "\(report.quarantined)")
        XCTAssertTrue(report.settled.reverified.contains(intact.xxh3_128!))
        XCTAssertEqual(report.settled.reverified.count, manifest.files.count - 1)
        XCTAssertEqual(report.blobsTrusted, 0, "every blob was re-verified, none trusted")
        XCTAssertEqual(markers(), [])
        XCTAssertFalse(FileManager.default.fileExists(atPath: blob), "a blob with lost writes is still served")
        XCTAssertEqual(try Digest128.ofFile(atPath: staging.layout.blob(intact.xxh3_128!)).description, intact.xxh3_128)
    }

    func testQuickCheckTrustsFittingDigestsAndHashesTheRest() async throws {
        let (staging, manifest) = try await pulled(.immediate)
        let shard = try XCTUnwrap(manifest.files.first { $0.path.hasSuffix(".safetensors") })
        unlink(staging.layout.blockDigests(shard.xxh3_128!))
        let quick = try staging.check(logger: logger, scope: .quick)
        XCTAssertEqual(quick.blobsVerified, 1, "only the blob without digests is hashed")
        XCTAssertEqual(quick.blobsTrusted, manifest.files.count - 1)
        XCTAssertNotNil(try? staging.stagedBlob(shard.xxh3_128!), "its digests were written again")
        let full = try staging.check(logger: logger, scope: .full)
        XCTAssertEqual(full.blobsVerified, manifest.files.count)
        XCTAssertEqual(full.blobsTrusted, 0)
    }

    func testStaleMarkerOfAMissingBlobIsClearedAndAFreshOneKept() async throws {
        let (staging, _) = try await pulled(.immediate)
        try FileManager.default.createDirectory(atPath: markerDirectory, withIntermediateDirectories: true)
        let digest = String(repeating: "ab", count: 16)
        try (try bootID() + "\n").write(toFile: markerDirectory + "/" + digest, atomically: true, encoding: .utf8)
        XCTAssertEqual(try staging.settle(logger: logger).pending, 1, "a pull may be about to publish it")
        XCTAssertEqual(markers(), [digest])
        XCTAssertEqual(try staging.settle(logger: logger, staleAfter: -1).cleared, 1)
        XCTAssertEqual(markers(), [])
    }

    /// The daemon: a preload under deferred durability is settled by the time
    /// SIGTERM has drained; after a "reboot", the next start re-verifies.
    func testDaemonSettlesOnDrainAndReverifiesAfterAReboot() async throws {
        let daemon = try await DaemonHarness(tag: "durable")
        _ = try daemon.pushModel("durable@main", bigMiB: 12, shards: 1, seed: 61)
        try daemon.start()
        let info = try daemon.client().preload("durable@main")
        XCTAssertEqual(daemon.stop(), 0)
        XCTAssertEqual(markers(in: daemon), [], "drain fsyncs what the preload published")

        try FileManager.default.createDirectory(atPath: daemon.directory + "/staging/unsynced", withIntermediateDirectories: true)
        for file in info.files {
            try "00000000-0000-0000-0000-000000000000\n".write(
                toFile: daemon.directory + "/staging/unsynced/" + file.digest, atomically: true, encoding: .utf8)
        }
        try daemon.start()
        XCTAssertEqual(markers(in: daemon), [])
        XCTAssertTrue(daemon.logText.contains("\(info.files.count) re-verified after a reboot"), daemon.logText)
        XCTAssertEqual(try daemon.client().stat("durable@main", path: info.files[0].path).nvme, .staged)
        XCTAssertEqual(daemon.stop(), 0)
    }

    func markers(in daemon: DaemonHarness) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: daemon.directory + "/staging/unsynced")) ?? []).sorted()
    }
}
