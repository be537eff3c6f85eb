import Foundation
import XCTest

@testable import Config

final class ConfigurationTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "wc-config-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func write(_ json: String, name: String = "config.json") throws -> String {
        let path = directory + "/" + name
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// A loader that sees only `environment` and a home without credentials.
    func loader(_ environment: [String: String] = [:]) -> ConfigurationLoader {
        ConfigurationLoader(environment: environment, homeDirectory: directory, currentDirectory: directory)
    }

    func expectError(
        _ body: () throws -> Void, key: String, mentioning: [String], file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard let error = error as? ConfigError else { return XCTFail("not a ConfigError: \(error)", file: file, line: line) }
            XCTAssertEqual(error.key, key, file: file, line: line)
            for word in mentioning {
                XCTAssertTrue(error.description.contains(word), "\(error) does not mention \(word)", file: file, line: line)
            }
        }
    }

    func testTheShippedConfigFileLoads() throws {
        let shipped = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("config.json").path
        let config = try loader().load(file: shipped)
        XCTAssertEqual(config.transfer.partSize, 8 << 20)
        XCTAssertEqual(config.s3.addressing, .path)
    }

    func testFileValuesAreDecoded() throws {
        let path = try write(#"""
            {"transfer": {"partSize": "16MiB", "concurrency": 12},
             "staging": {"budgetBytes": 1073741824, "directory": "/nvme/wc"},
             "socket": {"mode": "0600"}, "s3": {"addressing": "virtual-host", "endpoint": "https://minio.local:9000"}}
            """#)
        let config = try loader().load(file: path)
        XCTAssertEqual(config.transfer.partSize, 16 << 20)
        XCTAssertEqual(config.transfer.concurrency, 12)
        XCTAssertEqual(config.staging.budgetBytes, 1 << 30)
        XCTAssertEqual(config.staging.directory, "/nvme/wc")
        XCTAssertEqual(config.socket.mode, 0o600)
        XCTAssertEqual(config.s3.addressing, .virtualHost)
        XCTAssertEqual(config.s3.endpoint, "https://minio.local:9000")
        XCTAssertEqual(config.transfer.retries, Configuration().transfer.retries, "unset keys keep defaults")
    }

    func testBadFileValueNamesTheKey() throws {
        let cases: [(String, String, [String])] = [
            (#"{"transfer": {"partSize": "8XB"}}"#, "transfer.partSize", ["8XB", "byte size"]),
            (#"{"transfer": {"concurrency": 0}}"#, "transfer.concurrency", ["between 1 and 256"]),
            (#"{"transfer": {"concurrency": "many"}}"#, "transfer.concurrency", ["many", "integer"]),
            (#"{"s3": {"addressing": "dns"}}"#, "s3.addressing", ["dns", "path, virtual-host"]),
            (#"{"s3": {"endpoint": "ftp://x"}}"#, "s3.endpoint", ["ftp://x"]),
            (#"{"socket": {"mode": "rw"}}"#, "socket.mode", ["octal"]),
            (#"{"ramCache": {"blockSize": "3MiB"}}"#, "ramCache.blockSize", ["power of two"]),
        ]
        for (json, key, words) in cases {
            let path = try write(json)
            expectError({ _ = try loader().load(file: path) }, key: key, mentioning: words + [path])
        }
    }

    func testUnknownKeysAreRefused() throws {
        let path = try write(#"{"transfer": {"partsize": "8MiB"}}"#)
        expectError({ _ = try loader().load(file: path) }, key: "transfer.partsize", mentioning: ["unknown key"])
    }

    func testMalformedAndMissingFiles() throws {
        let path = try write("{ not json")
        XCTAssertThrowsError(try loader().load(file: path)) { error in
            guard case .malformedFile = error as? ConfigError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try loader().load(file: directory + "/absent.json")) { error in
            guard case .unreadableFile = error as? ConfigError else { return XCTFail("\(error)") }
        }
    }

    func testEnvironmentOverridesFileAndFlagsOverrideEnvironment() throws {
        let path = try write(#"{"transfer": {"partSize": "16MiB", "concurrency": 4}, "s3": {"region": "eu-west-1"}}"#)
        let environment = [
            "WEIGHTCACHE_TRANSFER_PART_SIZE": "32MiB", "AWS_REGION": "us-west-2", "WEIGHTCACHE_TRANSFER_CONCURRENCY": "6",
        ]
        let fromEnvironment = try loader(environment).load(file: path)
        XCTAssertEqual(fromEnvironment.transfer.partSize, 32 << 20)
        XCTAssertEqual(fromEnvironment.s3.region, "us-west-2")
        XCTAssertEqual(fromEnvironment.transfer.concurrency, 6)

        let fromFlags = try loader(environment).load(file: path, flags: [("transfer.concurrency", "9")])
        XCTAssertEqual(fromFlags.transfer.concurrency, 9)
        XCTAssertEqual(fromFlags.transfer.partSize, 32 << 20)
    }

    func testBadEnvironmentValueNamesKeyAndVariable() {
        expectError(
            { _ = try loader(["WEIGHTCACHE_TRANSFER_RETRIES": "-1"]).load(file: nil) }, key: "transfer.retries",
            mentioning: ["WEIGHTCACHE_TRANSFER_RETRIES", "-1"])
        expectError(
            { _ = try loader(["AWS_ENDPOINT_URL": "not a url"]).load(file: nil) }, key: "s3.endpoint",
            mentioning: ["AWS_ENDPOINT_URL"])
        expectError(
            { _ = try loader().load(file: nil, flags: [("transfer.partSize", "huge")]) }, key: "transfer.partSize",
            mentioning: ["--set", "huge"])
    }

    /// Keys that name one of a few choices parse into their enums from the
    /// file, the environment and flags alike, and refuse any other name with
    /// the list of the right ones.
    func testChoicesAreTypedAndUnknownNamesRefused() throws {
        let defaults = try loader().load(file: nil)
        XCTAssertEqual(defaults.staging.durability, .deferred)
        XCTAssertEqual(defaults.staging.writes, .direct)
        XCTAssertEqual(defaults.ramCache.policy, .s3fifo)
        XCTAssertEqual(defaults.s3.addressing, .path)
        let path = try write(#"{"staging": {"durability": "immediate"}, "ramCache": {"policy": "lru"}}"#)
        let set = try loader(["WEIGHTCACHE_STAGING_WRITES": "buffered"]).load(
            file: path, flags: [("s3.addressing", "virtual-host")])
        XCTAssertEqual(set.staging.durability, .immediate)
        XCTAssertEqual(set.ramCache.policy, .lru)
        XCTAssertEqual(set.staging.writes, .buffered)
        XCTAssertEqual(set.s3.addressing, .virtualHost)
        for (key, right) in [
            ("staging.durability", "deferred, immediate"), ("staging.writes", "direct, buffered"),
            ("ramCache.policy", "lru, s3-fifo"), ("s3.addressing", "path, virtual-host"),
        ] {
            expectError({ _ = try loader().load(file: nil, flags: [(key, "S3-FIFO")]) }, key: key, mentioning: ["S3-FIFO", right])
        }
    }

    /// The RAM arena's pages: small by default, huge on request, nothing else.
    func testRAMCachePages() throws {
        XCTAssertEqual(try loader().load(file: nil).ramCache.pages, .small)
        XCTAssertEqual(try loader(["WEIGHTCACHE_RAM_CACHE_PAGES": "huge"]).load(file: nil).ramCache.pages, .huge)
        let path = try write(#"{"ramCache": {"pages": "huge"}}"#)
        XCTAssertEqual(try loader().load(file: path).ramCache.pages, .huge)
        expectError(
            { _ = try loader(["WEIGHTCACHE_RAM_CACHE_PAGES": "2MiB"]).load(file: nil) }, key: "ramCache.pages",
            mentioning: ["WEIGHTCACHE_RAM_CACHE_PAGES", "huge, small"])
    }

    func testCredentialsFromEnvironmentAndSharedFile() throws {
        let fromEnvironment = try loader([
            "AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "SECRET", "AWS_SESSION_TOKEN": "TOKEN",
        ]).load(file: nil)
        XCTAssertEqual(fromEnvironment.s3.accessKeyID, "AKID")
        XCTAssertEqual(fromEnvironment.s3.sessionToken, "TOKEN")

        try FileManager.default.createDirectory(atPath: directory + "/.aws", withIntermediateDirectories: true)
        try """
            [default]
            aws_access_key_id = DEFAULTKEY
            aws_secret_access_key = defaultsecret

            [profile ci]
            aws_access_key_id = CIKEY
            aws_secret_access_key = cisecret
            """.write(toFile: directory + "/.aws/credentials", atomically: true, encoding: .utf8)
        XCTAssertEqual(try loader().load(file: nil).s3.accessKeyID, "DEFAULTKEY")
        let ci = try loader(["AWS_PROFILE": "ci"]).load(file: nil)
        XCTAssertEqual(ci.s3.accessKeyID, "CIKEY")
        XCTAssertEqual(ci.s3.secretAccessKey, "cisecret")
        // Explicit keys win over the shared file.
        XCTAssertEqual(try loader(["AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "B"]).load(file: nil).s3.accessKeyID, "A")
    }

    func testHalfACredentialIsRefusedAndSecretsAreMasked() throws {
        expectError(
            { _ = try loader(["AWS_ACCESS_KEY_ID": "AKID"]).load(file: nil) }, key: "s3.secretAccessKey",
            mentioning: ["both or neither"])
        let path = try write(#"{"s3": {"secretAccessKey": 42}}"#)
        XCTAssertThrowsError(try loader().load(file: path)) { error in
            XCTAssertTrue("\(error)".contains("<redacted>"), "\(error)")
        }
        let config = try loader(["AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "hunter2", "AWS_SESSION_TOKEN": "tok"])
            .load(file: nil)
        let rendered = config.renderedJSON()
        XCTAssertFalse(rendered.contains("hunter2") || rendered.contains("\"tok\""), rendered)
        XCTAssertNoThrow(try JSONSerialization.jsonObject(with: Data(rendered.utf8)))
    }

    func testLocateOrder() throws {
        XCTAssertEqual(loader(["WEIGHTCACHE_CONFIG": "/a.json"]).locate(explicit: "/b.json"), "/b.json")
        XCTAssertEqual(loader(["WEIGHTCACHE_CONFIG": "/a.json"]).locate(explicit: nil), "/a.json")
        let local = try write("{}")
        XCTAssertEqual(loader().locate(explicit: nil), local)
    }

    func testRenderedConfigurationLoadsBackUnchanged() throws {
        var config = Configuration()
        config.transfer.partSize = 24 << 20
        config.s3.endpoint = "http://127.0.0.1:9000"
        config.socket.group = "gpu"
        let path = try write(config.renderedJSON())
        XCTAssertEqual(try loader().load(file: path), config)
    }

    func testByteSizes() {
        XCTAssertEqual(ByteSize.parse("8MiB"), 8 << 20)
        XCTAssertEqual(ByteSize.parse("8 MiB"), 8 << 20)
        XCTAssertEqual(ByteSize.parse("1.5GiB"), 3 << 29)
        XCTAssertEqual(ByteSize.parse("200GB"), 200_000_000_000)
        XCTAssertEqual(ByteSize.parse("4096"), 4096)
        XCTAssertNil(ByteSize.parse("1.5"))
        XCTAssertNil(ByteSize.parse("-1MiB"))
        XCTAssertNil(ByteSize.parse("MiB"))
        XCTAssertEqual(ByteSize.format(8 << 20), "8MiB")
        XCTAssertEqual(ByteSize.format(1536 << 10), "1536KiB")
    }

    /// docs/configuration.md must document every key and its variable.
    func testEveryKeyIsDocumented() throws {
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/configuration.md")
        let text = try String(contentsOf: docs, encoding: .utf8)
        for setting in Setting.all {
            XCTAssertTrue(text.contains("`\(setting.key)`"), "docs/configuration.md lacks \(setting.key)")
            XCTAssertTrue(text.contains(setting.environment), "docs/configuration.md lacks \(setting.environment)")
        }
    }
}
