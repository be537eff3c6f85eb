import Foundation
import ObjectStore
import XCTest

/// The store contract on a plain directory (no server needed).
final class FileStoreContractTests: XCTestCase {
    var root = ""

    override func setUpWithError() throws {
        root = try temporaryDirectory()
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: root)
    }

    func testRangedReads() async throws {
        try await StoreContract.rangedReads(FileStore(root: root))
    }

    func testBasics() async throws {
        try await StoreContract.basics(FileStore(root: root))
    }

    func testParallelDownload() async throws {
        let before = openDescriptorCount()
        try await StoreContract.parallelDownload(FileStore(root: root), size: 40 << 20)
        XCTAssertEqual(openDescriptorCount(), before, "file descriptors leaked")
    }

    func testKeysCannotLeaveTheRoot() async throws {
        let store = FileStore(root: root + "/inner")
        try FileManager.default.createDirectory(atPath: root + "/inner", withIntermediateDirectories: true)
        try Data("secret".utf8).write(to: URL(fileURLWithPath: root + "/outside.txt"))
        for key in ["../outside.txt", "/etc/passwd", "a/../../outside.txt", "a\0b", "", "a//b", "./x"] {
            do {
                _ = try await store.get(key)
                XCTFail("\(String(reflecting: key)) was served")
            } catch {
                guard case .invalidKey = error else { return XCTFail("\(String(reflecting: key)): \(error)") }
            }
        }
    }

    func testMissingRootIsBucketNotFound() async throws {
        let store = FileStore(root: root + "/does-not-exist")
        do {
            _ = try await store.head("x")
            XCTFail("head succeeded")
        } catch {
            guard case .bucketNotFound = error else { return XCTFail("\(error)") }
        }
    }
}
