// The real `weightcache` binary against the real S3 server.
import Foundation
import Integrity
import XCTest

final class CLITests: XCTestCase {
    /// The binary SwiftPM built beside this test bundle.
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        .appendingPathComponent("weightcache").path

    var environment: [String: String] {
        [
            "AWS_ENDPOINT_URL": sharedServer.endpoint, "AWS_ACCESS_KEY_ID": sharedServer.accessKey,
            "AWS_SECRET_ACCESS_KEY": sharedServer.secretKey, "AWS_REGION": sharedServer.region,
        ]
    }

    func weightcache(_ arguments: [String], environment extra: [String: String] = [:]) -> (status: Int32, output: String) {
        runProcessStatus(
            binary, arguments + (arguments.first == "hash" ? [] : ["--config", repositoryRoot + "/config.json"]),
            environment: environment.merging(extra) { $1 })
    }

    func testPutThenFetchObjectAndPrefix() throws {
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: binary), "no binary at \(binary)")
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let bucket = uniqueBucketName("cli")
        let big = try randomFile(size: 20 << 20 + 3, in: directory)
        let small = directory + "/config.json"
        try Data("{\"tiny\": true}".utf8).write(to: URL(fileURLWithPath: small))

        var run = weightcache(["put", "--create-bucket", big, "s3://\(bucket)/models/m1/shard-1.bin"])
        XCTAssertEqual(run.status, 0, run.output)
        run = weightcache(["put", small, "s3://\(bucket)/models/m1/sub/"])
        XCTAssertEqual(run.status, 0, run.output)

        // One object, into a named file.
        run = weightcache(["fetch", "s3://\(bucket)/models/m1/shard-1.bin", directory + "/one.bin", "--part-size", "1MiB"])
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertEqual(try Digest128.ofFile(atPath: directory + "/one.bin"), try Digest128.ofFile(atPath: big))

        // A prefix, into a directory, keeping relative paths.
        run = weightcache(["fetch", "s3://\(bucket)/models/m1", directory + "/tree"])
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("fetched 2 object(s)"), run.output)
        XCTAssertEqual(try Digest128.ofFile(atPath: directory + "/tree/shard-1.bin"), try Digest128.ofFile(atPath: big))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: directory + "/tree/sub/config.json")), try Data(contentsOf: URL(fileURLWithPath: small)))

        // `hash` prints the digest xxh128sum would.
        run = weightcache(["hash", big])
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.hasPrefix("\(try Digest128.ofFile(atPath: big))  \(big)"), run.output)

        // file:// works wherever s3:// does: the fetched tree as a source.
        run = weightcache(["fetch", "file://\(directory)/tree/", directory + "/copy"])
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertEqual(try Digest128.ofFile(atPath: directory + "/copy/shard-1.bin"), try Digest128.ofFile(atPath: big))
        XCTAssertTrue(FileManager.default.fileExists(atPath: directory + "/copy/sub/config.json"))

        // `ls` lists both.
        run = weightcache(["ls", "s3://\(bucket)/models/"])
        XCTAssertTrue(run.output.contains("models/m1/shard-1.bin") && run.output.contains("models/m1/sub/config.json"), run.output)
    }

    func testFailuresAreClearAndLeaveNothing() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var run = weightcache(["fetch", "s3://\(uniqueBucketName("none"))/k", directory + "/out"])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.output.contains("NoSuchBucket"), run.output)

        run = weightcache(["fetch", "s3://b/k", directory + "/out"], environment: ["WEIGHTCACHE_TRANSFER_PART_SIZE": "huge"])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.output.contains("transfer.partSize") && run.output.contains("WEIGHTCACHE_TRANSFER_PART_SIZE"), run.output)

        run = weightcache(["fetch", "s3://b/k", directory + "/out"], environment: ["AWS_SECRET_ACCESS_KEY": "wrong-secret"])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertFalse(run.output.contains("wrong-secret"), "secret printed: \(run.output)")

        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), [], "a failed fetch left files")
    }

    /// `inspect` of a pushed model reads only the headers and counts what the
    /// real safetensors library counts.
    func testInspectSizesAModelFromItsHeaders() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try runProcess("/usr/bin/env", [
            "python3", repositoryRoot + "/scripts/make-test-model.py", directory + "/model", "--big-mib", "8", "--shards", "2", "--seed", "5",
        ])
        let expected = try runProcess("/usr/bin/env", [
            "python3", "-c",
            "import glob, sys, numpy as np\nfrom safetensors.numpy import load_file\nprint(sum(int(np.prod(t.shape)) for f in glob.glob(sys.argv[1] + '/*.safetensors') for t in load_file(f).values()))",
            directory + "/model",
        ]).trimmingCharacters(in: .whitespacesAndNewlines)
        let bucket = uniqueBucketName("inspect")
        let models = ["WEIGHTCACHE_MODELS": "s3://\(bucket)/models"]
        var run = weightcache(["push", "--create-bucket", directory + "/model", "sized@main"], environment: models)
        XCTAssertEqual(run.status, 0, run.output)
        run = weightcache(["inspect", "sized@main", "--json"], environment: models)
        XCTAssertEqual(run.status, 0, run.output)
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any], run.output)
        XCTAssertEqual((report["parameters"] as? NSNumber)?.stringValue, expected)
        XCTAssertEqual(report["shards"] as? Int, 2)
        run = weightcache(["inspect", "s3://\(bucket)/models/sized/main/"], environment: models)
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertTrue(run.output.contains("bf16") && run.output.contains("int4") && run.output.contains("GPUs of"), run.output)
    }

    /// Every subcommand's --help has examples; failures exit with the
    /// documented codes and one line on stderr.
    func testHelpExamplesAndExitCodes() throws {
        let commands = ["serve", "ready", "preload", "pin", "unpin", "evict", "stats", "ls", "push", "pull", "path", "inspect",
            "verify", "fetch", "put", "hash", "config"]
        for command in commands {
            let run = runProcessStatus(binary, [command, "--help"])
            XCTAssertEqual(run.status, 0, command)
            XCTAssertTrue(run.output.contains("Example"), "\(command) --help has no example")
        }
        let bucket = uniqueBucketName("exit")
        let models = ["WEIGHTCACHE_MODELS": "s3://\(bucket)/models"]
        var run = weightcache(["stats", "--set", "socket.path=/tmp/weightcache-no-such-daemon.sock"])
        XCTAssertEqual(run.status, 4, run.output)
        XCTAssertEqual(run.output.split(separator: "\n").count, 1, run.output)
        XCTAssertTrue(run.output.hasPrefix("weightcache: error: no daemon listening"), run.output)
        run = weightcache(["put", "--create-bucket", repositoryRoot + "/config.json", "s3://\(bucket)/x/config.json"])
        XCTAssertEqual(run.status, 0, run.output)
        run = weightcache(["inspect", "nope@main"], environment: models)
        XCTAssertEqual(run.status, 3, run.output)
        run = weightcache(["pull", "nope@main", "--set", "transfer.retries=many"], environment: models)
        XCTAssertEqual(run.status, 78, run.output)
        run = weightcache(["pull"])
        XCTAssertEqual(run.status, 64, run.output)
        // A malformed model reference is bad usage too, with one line saying why.
        run = weightcache(["pull", "nope@.."], environment: models)
        XCTAssertEqual(run.status, 64, run.output)
        XCTAssertEqual(run.output.split(separator: "\n").count, 1, run.output)
        XCTAssertTrue(run.output.contains("invalid model reference"), run.output)
        run = weightcache(["pin", "--local", "nope@..", "--set", "staging.directory=/tmp/weightcache-no-such-staging"])
        XCTAssertEqual(run.status, 64, run.output)
    }
}
