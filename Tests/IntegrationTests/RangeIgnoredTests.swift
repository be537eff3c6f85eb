// An endpoint that ignores Range: some S3-compatible gateways and plain HTTP
// servers answer a ranged GET with the whole object (200, not 206). SeaweedFS
// honours Range, and a proxy cannot strip the header (it is signed), so the
// endpoint here is Python's http.server, which ignores Range and credentials
// alike, serving a models root that a file:// push laid out. Every ranged
// transfer must refuse such an answer at its first byte (nothing of the
// object lands where a part belongs), say why, and not retry it.
import Foundation
import Integrity
import Logging
import Models
import ObjectStore
import Staging
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class RangeIgnoredTests: XCTestCase {
    let logger = Logger(label: "test")
    var directory = ""
    var server: Int32 = 0

    override func setUpWithError() throws {
        directory = try temporaryDirectory()
    }

    override func tearDownWithError() throws {
        if server > 0 { kill(server, SIGTERM) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Starts `python3 -m http.server` on a free port over `root`; its endpoint.
    func serve(_ root: String) throws -> String {
        let output = try runProcess("/bin/sh", [
            "-c", "python3 -u -m http.server 0 --bind 127.0.0.1 --directory \"$0\" >\"$1\" 2>&1 </dev/null & echo $!",
            root, directory + "/http.out",
        ])
        server = Int32(output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        for _ in 0..<100 {
            let text = (try? String(contentsOfFile: directory + "/http.out", encoding: .utf8)) ?? ""
            // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Serving HTTP on ") }),
                let port = line.split(separator: " ").dropFirst(5).first.flatMap({ Int($0) })
            {
                return "http://127.0.0.1:\(port)"
            }
            usleep(50_000)
        }
        throw CommandFailure(command: "python3 -m http.server", output: (try? String(contentsOfFile: directory + "/http.out", encoding: .utf8)) ?? "")
    }

    func testRangedGetsAnsweredWithTheWholeObjectAreRefusedNotRetried() async throws {
        // A model with a small file (one GET from 0, whole: a 200 is right)
        // and a 20 MiB one (three 8 MiB parts: each 200 is wrong).
        let model = directory + "/model"
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
        try Data("{\"tiny\": true}".utf8).write(to: URL(fileURLWithPath: model + "/config.json"))
        try randomFile(size: 20 << 20, at: model + "/weights.bin")
        let served = directory + "/served"
        let reference = try ModelReference(parsing: "tiny@main")
        _ = try await ModelRepository(store: FileStore(root: served + "/rangeless"), prefix: "models").push(directory: model, as: reference)

        let endpoint = try serve(served)
        // Retries on, with pauses long enough to show if they were taken.
        let settings = S3Settings(
            endpoint: endpoint, credentials: S3Credentials(accessKeyID: "any", secretAccessKey: "any"),
            retry: RetryPolicy(maxRetries: 3, baseDelayMilliseconds: 1000, maxDelayMilliseconds: 1000))
        let store = try S3Client(settings: settings, logger: logger).bucket("rangeless")
        let key = "models/tiny/main/weights.bin"

        // The object store calls, one by one.
        // A range reaching past the end of a small object: the whole object
        // fits in what was asked for, and is sliced to the range.
        let small = try await store.get("models/tiny/main/config.json", range: 2..<1000)
        XCTAssertEqual(small, Array("tiny\": true}".utf8))
        let started = ContinuousClock.now
        do {
            _ = try await store.get("models/tiny/main/config.json", range: 2..<6)
            XCTFail("4 bytes of a 14-byte object came back from a server that ignores Range")
        } catch {
            guard case .rangeIgnored = error else { return XCTFail("\(error)") }
        }
        do {
            _ = try await store.get(key, range: 8 << 20..<9 << 20)
            XCTFail("a 1 MiB range of a 20 MiB object came back from a server that ignores Range")
        } catch {
            guard case .rangeIgnored(let context) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(context.status, 200)
            XCTAssertTrue("\(error)".contains("ignored the Range header"), "\(error)")
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0xA5)
        do {
            try await store.read(key, range: 4 << 20..<8 << 20, into: [MemoryTarget(buffer)])
            XCTFail("a scatter read took a whole object")
        } catch {
            guard case .rangeIgnored = error else { return XCTFail("\(error)") }
        }
        XCTAssertTrue(buffer.allSatisfy { $0 == 0xA5 }, "bytes of the whole object landed in the read's buffer")
        // From 0 but shorter than the object: a 200 is just as wrong.
        do {
            try await store.read(key, range: 0..<4 << 20, into: [MemoryTarget(buffer)])
            XCTFail("a scatter read from 0 took a whole object")
        } catch {
            guard case .rangeIgnored = error else { return XCTFail("\(error)") }
        }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(1), "the refusals were retried (1 s pauses)")

        // A pull: the small file may land; the big one fails, naming its
        // file and the cause; nothing of it is under blobs/.
        let staging = Staging(
            directory: directory + "/staging", downloader: ParallelDownloader(partSize: 8 << 20, concurrency: 4), logger: logger)
        let repository = ModelRepository(store: store, prefix: "models")
        let resolved = try await repository.resolve(reference)
        do {
            _ = try await staging.pull(resolved, from: repository)
            XCTFail("the pull succeeded against a server that ignores Range")
        } catch {
            let text = "\(error)"
            XCTAssertTrue(text.contains("weights.bin") && text.contains("ignored the Range header"), text)
            XCTAssertFalse(text.contains("gave up after"), "retried: \(text)")
        }
        let bigDigest = try Digest128.ofFile(atPath: model + "/weights.bin").description
        let blobs = (try? FileManager.default.contentsOfDirectory(atPath: directory + "/staging/blobs")) ?? []
        XCTAssertFalse(blobs.contains(bigDigest), "the big file was staged")
        for blob in blobs {
            XCTAssertEqual(try Digest128.ofFile(atPath: directory + "/staging/blobs/" + blob).description, blob, "an unverified blob is visible")
        }
    }
}
