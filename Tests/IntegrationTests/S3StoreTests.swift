// The S3 client against a real SeaweedFS server with SigV4 enforced.
import Foundation
import Integrity
import Logging
import ObjectStore
import XCTest

final class S3StoreTests: XCTestCase {
    let logger = Logger(label: "test")

    /// A client on the shared server and a fresh bucket of its own.
    func makeStore(
        _ tag: String, settings: S3Settings? = nil
    ) async throws -> S3Store {
        let client = try S3Client(settings: settings ?? sharedServer.settings(), logger: logger)
        let bucket = uniqueBucketName(tag)
        try await client.createBucket(bucket)
        return client.bucket(bucket)
    }

    func testRangedReadsMatchLocalBytes() async throws {
        try await StoreContract.rangedReads(try await makeStore("ranges"))
    }

    func testBasicsAndAwkwardKeys() async throws {
        try await StoreContract.basics(try await makeStore("basics"))
    }

    /// 300 MiB: multipart upload (38 parts) and parallel ranged download.
    func testLargeObjectRoundTripsInParallel() async throws {
        try await StoreContract.parallelDownload(try await makeStore("large"), size: 300 << 20)
    }

    func testListingMoreThanOnePage() async throws {
        let store = try await makeStore("list")
        let keys = (0..<1050).map { String(format: "many/key-%05d", $0) }
        _ = try await concurrently(keys, limit: 16) { key in try await store.put(key, bytes: Array(key.utf8)) }
        try await store.put("other/outside-the-prefix", bytes: [1])

        let listed = try await store.list(prefix: "many/")
        XCTAssertEqual(listed.count, 1050)
        XCTAssertEqual(listed.map(\.key), keys)
        XCTAssertEqual(listed.first?.size, UInt64("many/key-00000".utf8.count))

        var small = store
        small.listPageSize = 100  // 11 pages: continuation tokens must round-trip
        let paged = try await small.list(prefix: "many/key-0").map(\.key)
        XCTAssertEqual(paged, keys.filter { $0.hasPrefix("many/key-0") })
    }

    func testWrongSecretIsAccessDenied() async throws {
        let good = try await makeStore("auth")
        try await good.put("k", bytes: [1, 2, 3])
        let wrong = S3Credentials(accessKeyID: sharedServer.accessKey, secretAccessKey: "not-the-secret")
        let client = try S3Client(settings: sharedServer.settings(credentials: wrong), logger: logger)
        do {
            _ = try await client.bucket(good.bucket).get("k")
            XCTFail("a wrong secret was accepted")
        } catch {
            guard case .accessDenied(let context) = error else { return XCTFail("expected accessDenied, got \(error)") }
            XCTAssertEqual(context.code, "SignatureDoesNotMatch")
            XCTAssertTrue(error.description.contains("SignatureDoesNotMatch"), error.description)
            XCTAssertFalse(error.description.contains("not-the-secret"), "the secret leaked into the error")
            XCTAssertNotNil(context.requestID)
        }
    }

    func testMissingKeyIsNotFound() async throws {
        let store = try await makeStore("missing")
        do {
            _ = try await store.get("no/such/key")
            XCTFail("got bytes for a missing key")
        } catch {
            guard case .notFound(let context) = error else { return XCTFail("expected notFound, got \(error)") }
            XCTAssertEqual(context.code, "NoSuchKey")
            XCTAssertEqual(context.key, "no/such/key")
            XCTAssertTrue(error.description.contains("NoSuchKey"), error.description)
        }
        do {
            _ = try await store.head("no/such/key")
            XCTFail("head of a missing key succeeded")
        } catch {
            guard case .notFound = error else { return XCTFail("expected notFound, got \(error)") }
        }
    }

    func testMissingBucketHasItsOwnError() async throws {
        let client = try S3Client(settings: sharedServer.settings(), logger: logger)
        let store = client.bucket(uniqueBucketName("absent"))
        for attempt in ["get", "list"] {
            do {
                if attempt == "get" { _ = try await store.get("k") } else { _ = try await store.list(prefix: "") }
                XCTFail("\(attempt) in a missing bucket succeeded")
            } catch {
                guard case .bucketNotFound(let context) = error else {
                    return XCTFail("\(attempt): expected bucketNotFound, got \(error)")
                }
                XCTAssertEqual(context.code, "NoSuchBucket")
                XCTAssertTrue(error.description.contains("NoSuchBucket"), error.description)
            }
        }
    }

    func testFailedMultipartUploadIsAborted() async throws {
        let store = try await makeStore("abort")
        let size: UInt64 = 5 * (5 << 20)
        do {
            try await store.upload("half.bin", size: size, progress: nil) { range throws(ObjectStoreError) in
                if range.lowerBound >= 2 * (5 << 20) {
                    throw ObjectStoreError.localIO(syscall: "pread", path: "injected", errno: EIO)
                }
                return [UInt8](repeating: 7, count: Int(range.count))
            }
            XCTFail("the upload did not fail")
        } catch {
            guard case .localIO(_, let path, _) = error else { return XCTFail("expected the injected error, got \(error)") }
            XCTAssertEqual(path, "injected")
        }
        let pending = try await store.pendingUploads(prefix: "half")
        XCTAssertTrue(pending.isEmpty, "upload left behind: \(pending)")
        do {
            _ = try await store.head("half.bin")
            XCTFail("a failed upload produced an object")
        } catch {
            guard case .notFound = error else { return XCTFail("expected notFound, got \(error)") }
        }
    }

    func testMultipartOfMoreThanThreePartsRoundTrips() async throws {
        let store = try await makeStore("multi")
        let size = 4 * (5 << 20) + 777
        let bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
        try await store.upload("four.bin", size: UInt64(size), progress: nil) { range throws(ObjectStoreError) in
            Array(bytes[Int(range.lowerBound)..<Int(range.upperBound)])
        }
        let got = try await store.get("four.bin")
        XCTAssertTrue(got == bytes)
        let pending = try await store.pendingUploads(prefix: "four")
        XCTAssertTrue(pending.isEmpty)
    }

    func testObjectReplacedMidDownloadIsCaught() async throws {
        let store = try await makeStore("etag")
        try await store.put("v.bin", bytes: [1, 2, 3, 4])
        let stale = try await store.head("v.bin").etag
        try await store.put("v.bin", bytes: [5, 6, 7, 8])
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fd = open(directory + "/out", O_RDWR | O_CREAT, 0o644)
        defer { close(fd) }
        do {
            try await store.download(
                "v.bin", range: 0..<4, into: OutputFile(descriptor: fd, path: directory + "/out"), at: 0,
                ifMatch: stale, progress: nil)
            XCTFail("a stale ETag was accepted")
        } catch {
            guard case .preconditionFailed = error else { return XCTFail("expected preconditionFailed, got \(error)") }
        }
    }
}

/// Runs `body` over `items` with at most `limit` at once.
func concurrently<T: Sendable>(
    _ items: [T], limit: Int, _ body: @escaping @Sendable (T) async throws -> Void
) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        var iterator = items.makeIterator()
        for _ in 0..<limit {
            guard let item = iterator.next() else { break }
            group.addTask { try await body(item) }
        }
        while try await group.next() != nil {
            if let item = iterator.next() { group.addTask { try await body(item) } }
        }
    }
}
