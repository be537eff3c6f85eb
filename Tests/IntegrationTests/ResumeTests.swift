// kill -9 of a real `weightcache pull` at random moments, then a final pull:
// the data is right and each pull resumed from the blocks already staged.
import Foundation
import Integrity
import Logging
import Models
import ObjectStore
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class ResumeTests: XCTestCase {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        .appendingPathComponent("weightcache").path

    func testKillNineMidPullThreeTimesThenResume() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try runProcess("/usr/bin/env", [
            "python3", repositoryRoot + "/scripts/make-test-model.py", directory + "/model", "--big-mib", "96", "--shards", "1",
        ])
        let client = try S3Client(settings: sharedServer.settings(), logger: Logger(label: "test"))
        let bucket = uniqueBucketName("resume")
        try await client.createBucket(bucket)
        let repository = ModelRepository(store: client.bucket(bucket), prefix: "models")
        let reference = try ModelReference(parsing: "resume/model@main")
        let manifest = try await repository.push(directory: directory + "/model", as: reference)
        let shard = try XCTUnwrap(manifest.files.first { $0.path.hasSuffix(".safetensors") })
        let blockCount = shard.blocks!.count

        let staging = directory + "/staging"
        let environment = [
            "AWS_ENDPOINT_URL": sharedServer.endpoint, "AWS_ACCESS_KEY_ID": sharedServer.accessKey,
            "AWS_SECRET_ACCESS_KEY": sharedServer.secretKey, "AWS_REGION": sharedServer.region,
            "WEIGHTCACHE_MODELS": "s3://\(bucket)/models", "WEIGHTCACHE_STAGING_DIRECTORY": staging,
            // One block per part, 4 parts in flight, slow enough (about 6 s for the
            // shard) that every kill lands mid-pull.
            "WEIGHTCACHE_TRANSFER_CONCURRENCY": "4", "WEIGHTCACHE_TRANSFER_PART_SIZE": "4MiB",
            "WEIGHTCACHE_TRANSFER_MAX_BYTES_PER_SECOND": "16MiB",
        ]
        let arguments = ["pull", reference.description, "--config", repositoryRoot + "/config.json"]
        let map = staging + "/partials/\(shard.xxh3_128!).blocks"

        var landed = 0
        for round in 1...3 {
            let log = directory + "/pull-\(round).log"
            let pid = try startInBackground(arguments, environment: environment, log: log)
            // Wait until this round has staged something new, then kill at a random moment.
            let deadline = ContinuousClock.now + .seconds(20)
            while landedBlocks(map) <= landed && ContinuousClock.now < deadline { usleep(10_000) }
            usleep(useconds_t.random(in: 0...300_000))
            kill(pid, SIGKILL)
            for _ in 0..<200 where kill(pid, 0) == 0 { usleep(10_000) }

            let now = landedBlocks(map)
            XCTAssertGreaterThan(now, landed, "round \(round) staged nothing new")
            XCTAssertLessThan(now, blockCount, "round \(round) finished before the kill; slow it down")
            if round > 1 {
                let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                XCTAssertTrue(
                    output.contains("\(landed) of \(blockCount) blocks already staged"),
                    "round \(round) did not resume from the \(landed) blocks left by round \(round - 1): \(output)")
            }
            landed = now
        }

        // The bytes of the blocks the map holds now: what the final pull should reuse.
        let flags = Array(FileManager.default.contents(atPath: map) ?? Data())
        let resumed = flags.indices.filter { flags[$0] == 1 }.reduce(UInt64(0)) { total, block in
            let start = UInt64(block * manifest.blockSize)
            return total + min(shard.size, start + UInt64(manifest.blockSize)) - start
        }
        let final = runProcessStatus(binary, arguments, environment: environment)
        XCTAssertEqual(final.status, 0, final.output)
        XCTAssertTrue(final.output.contains("\(landed) of \(blockCount) blocks already staged"), final.output)
        // Only what was missing came over the wire: the staged blocks were reused.
        XCTAssertTrue(final.output.contains("resumed \(resumed) bytes"), final.output)
        let downloaded = try XCTUnwrap(number(after: "downloaded ", in: final.output))
        XCTAssertTrue(final.output.contains(" MiB/s from the store"), final.output)  // the rate, for sizing transfer.concurrency
        let others = manifest.files.filter { $0.path != shard.path }.reduce(0) { $0 + $1.size }
        XCTAssertLessThanOrEqual(downloaded, shard.size - resumed + others, final.output)

        let snapshot = final.output.split(separator: "\n").last.map(String.init) ?? ""
        for file in manifest.files {
            XCTAssertEqual(
                try Digest128.ofFile(atPath: snapshot + "/" + file.path).description, file.xxh3_128, file.path)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: map), "the block map outlived the pull")
        let partials = try FileManager.default.contentsOfDirectory(atPath: staging + "/partials")
        XCTAssertEqual(partials, [], "partials left behind")
    }

    /// Starts the binary detached, output to `log`; returns its pid.
    func startInBackground(_ arguments: [String], environment: [String: String], log: String) throws -> Int32 {
        let output = try runProcess(
            "/bin/sh", ["-c", "\"$0\" \"$@\" >'\(log)' 2>&1 </dev/null & echo $!", binary] + arguments,
            environment: environment)
        return try XCTUnwrap(Int32(output.trimmingCharacters(in: .whitespacesAndNewlines)))
    }

    func landedBlocks(_ map: String) -> Int {
        guard let data = FileManager.default.contents(atPath: map) else { return 0 }
        return data.filter { $0 == 1 }.count
    }

    func number(after label: String, in text: String) -> UInt64? {
        guard let range = text.range(of: label) else { return nil }
        return UInt64(text[range.upperBound...].prefix { $0.isNumber })
    }
}
