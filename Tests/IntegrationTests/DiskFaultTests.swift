// Disk faults under a live daemon: a staged blob truncated, flipped or
// deleted behind its back; the staging filesystem remounted read-only; a
// filesystem too small for the model. Typed errors, quarantine, the right
// bytes served anyway (from the store) and re-staged — never a crash, never
// a wrong byte.
import Foundation
import Integrity
import WeightCacheClient
import Wire
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class DiskFaultTests: XCTestCase {
    var mounted: String?

    override func tearDown() {
        if let mounted { _ = runProcessStatus("/bin/umount", ["-l", mounted]) }
        mounted = nil
    }

    func testBlobsDamagedBehindTheDaemonAreQuarantinedAndServedRight() async throws {
        let daemon = try await DaemonHarness(tag: "damage")
        let folder = try daemon.pushModel("damage@main", bigMiB: 12, shards: 1, seed: 51)
        try daemon.start()
        let client = try daemon.client()
        let info = try client.preload("damage@main")
        let shard = try XCTUnwrap(info.files.first { $0.path.hasSuffix(".safetensors") })
        let expected = try Array(Data(contentsOf: URL(fileURLWithPath: folder + "/" + shard.path)))
        let blob = daemon.directory + "/staging/blobs/" + shard.digest

        let damages: [(String, () throws -> Void)] = [
            ("truncated", { XCTAssertEqual(truncate(blob, off_t(expected.count / 2)), 0) }),
            ("flipped", {
                let fd = open(blob, O_WRONLY)
                var byte: UInt8 = 0x5A
                XCTAssertEqual(pwrite(fd, &byte, 1, off_t(expected.count - 10)), 1)
                close(fd)
            }),
            ("deleted", { XCTAssertEqual(unlink(blob), 0) }),
        ]
        for (name, damage) in damages {
            // Wait until the previous round re-staged the blob, then damage it with RAM emptied.
            XCTAssertEqual(try stagedState(client, "damage@main", shard.path, timeout: .seconds(30)).nvme, .staged, name)
            _ = try client.evict("damage@main", tier: .ram)
            chmod(blob, 0o644)
            try damage()
            let got = try client.read("damage@main", path: shard.path, offset: 0, length: expected.count)
            XCTAssertTrue(got == expected, "\(name): wrong bytes served")
        }
        let quarantined = try FileManager.default.contentsOfDirectory(atPath: daemon.directory + "/staging/quarantine")
        XCTAssertEqual(quarantined.filter { $0.hasPrefix(shard.digest) }.count, 2, "truncated and flipped copies kept as evidence: \(quarantined)")
        let stats = try JSONSerialization.jsonObject(with: Data(try client.stats().utf8)) as! [String: Any]
        // The flip is caught by the block check; the truncation by the size, before any block is read.
        XCTAssertGreaterThanOrEqual((stats["ram"] as! [String: Any])["integrityFailures"] as! Int, 1)
        XCTAssertTrue(daemon.logText.contains("quarantined blob \(shard.digest)"), daemon.logText)
        // And it is staged again, verified.
        _ = try stagedState(client, "damage@main", shard.path, timeout: .seconds(30))
        XCTAssertEqual(try Digest128.ofFile(atPath: blob).description, shard.digest)
        XCTAssertEqual(daemon.stop(), 0)
    }

    func testReadOnlyRemountAndAFullDisk() async throws {
        let daemon = try await DaemonHarness(tag: "disk")
        let root = daemon.directory + "/mnt"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try runProcess("/bin/mount", ["-t", "tmpfs", "-o", "size=48m", "tmpfs", root])
        mounted = root
        daemon.settings["WEIGHTCACHE_STAGING_DIRECTORY"] = root + "/staging"
        daemon.settings["WEIGHTCACHE_STAGING_MIN_FREE_BYTES"] = "0"
        let small = try daemon.pushModel("small@main", bigMiB: 4, shards: 1, seed: 52)
        try daemon.pushModel("other@main", bigMiB: 4, shards: 1, seed: 53)
        try daemon.pushModel("huge@main", bigMiB: 64, shards: 1, seed: 54)
        try daemon.start()
        let client = try daemon.client()
        let info = try client.preload("small@main", pin: true)

        // Read-only: a pull fails with a typed error; what is staged is still served.
        try runProcess("/bin/mount", ["-o", "remount,ro", root])
        XCTAssertThrowsError(try client.preload("other@main")) { error in
            guard case ClientError.daemon(_, let message) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains("Read-only file system") || message.contains("errno 30"), message)
        }
        for file in info.files {
            let expected = try Array(Data(contentsOf: URL(fileURLWithPath: small + "/" + file.path)))
            XCTAssertTrue(try client.read("small@main", path: file.path, offset: 0, length: expected.count) == expected, file.path)
        }
        try runProcess("/bin/mount", ["-o", "remount,rw", root])
        _ = try client.preload("other@main")

        // Too big for the filesystem even after evicting what is unpinned: no-space, nothing half-staged.
        XCTAssertThrowsError(try client.preload("huge@main")) { XCTAssertEqual(code($0), .noSpace, "\($0)") }
        let blobs = try FileManager.default.contentsOfDirectory(atPath: root + "/staging/blobs")
        for name in blobs { XCTAssertEqual(try Digest128.ofFile(atPath: root + "/staging/blobs/" + name).description, name) }
        XCTAssertEqual(try client.resolve("small@main").files.map(\.nvme), info.files.map { _ in .staged }, "the pinned model was evicted")
        // The unpinned model went to make room, and stats counted it.
        let stats = try JSONSerialization.jsonObject(with: Data(try client.stats().utf8)) as! [String: Any]
        XCTAssertGreaterThanOrEqual((stats["nvme"] as! [String: Any])["evictions"] as? Int ?? 0, 1, "\(stats)")
        XCTAssertEqual(daemon.stop(), 0)
    }
}
