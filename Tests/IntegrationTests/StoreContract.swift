// One test body for every ObjectStore: the same assertions run against the
// real S3 server and against a file:// directory, so the two cannot drift.
import Foundation
import Integrity
import ObjectStore
import XCTest

enum StoreContract {
    /// 200 random ranges (plus first byte, last byte, empty, clipped and
    /// past-the-end ones) of one object match the local bytes.
    static func rangedReads(_ store: some ObjectStore, file: StaticString = #filePath, line: UInt = #line) async throws {
        var generator = SystemRandomNumberGenerator()
        let size = 3 * (1 << 20) + 12_345
        let bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
        try await store.put("ranges/object.bin", bytes: bytes)

        let whole = try await store.get("ranges/object.bin")
        XCTAssertTrue(whole == bytes, "whole object differs", file: file, line: line)
        let headSize = try await store.head("ranges/object.bin").size
        XCTAssertEqual(headSize, UInt64(size), file: file, line: line)

        let n = UInt64(size)
        var ranges: [Range<UInt64>] = [0..<1, (n - 1)..<n, 0..<n, 5..<5, (n - 10)..<(n + 100), 0..<(n * 2)]
        while ranges.count < 200 {
            let a = UInt64.random(in: 0..<n, using: &generator)
            let b = UInt64.random(in: a...min(n + 1000, a + (1 << 20)), using: &generator)
            ranges.append(a..<b)
        }
        for range in ranges {
            let got = try await store.get("ranges/object.bin", range: range)
            let expected = Array(bytes[Int(range.lowerBound)..<Int(min(range.upperBound, n))])
            XCTAssertEqual(got.count, expected.count, "range \(range)", file: file, line: line)
            XCTAssertTrue(got == expected, "range \(range) differs", file: file, line: line)
        }
        // Into caller memory, scattered over several targets (the cache's
        // blocks of one read): each filled in turn, exactly.
        for _ in 0..<50 {
            let a = UInt64.random(in: 0..<n, using: &generator)
            let b = UInt64.random(in: a + 1...min(n, a + (1 << 20)), using: &generator)
            var cuts = (0..<Int.random(in: 0...4, using: &generator)).map { _ in Int.random(in: 0...Int(b - a), using: &generator) }
            cuts = [0] + cuts.sorted() + [Int(b - a)]
            let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(b - a), alignment: 64)
            defer { memory.deallocate() }
            memory.initializeMemory(as: UInt8.self, repeating: 0)
            let targets = zip(cuts, cuts.dropFirst()).map { MemoryTarget(UnsafeMutableRawBufferPointer(rebasing: memory[$0..<$1])) }
            try await store.read("ranges/object.bin", range: a..<b, into: targets)
            XCTAssertTrue(Array(memory) == Array(bytes[Int(a)..<Int(b)]), "read \(a)..<\(b) into \(targets.count) targets differs", file: file, line: line)
        }
        // Asking for more than the object has is an error, not a short fill.
        do {
            let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 100, alignment: 64)
            defer { memory.deallocate() }
            try await store.read("ranges/object.bin", range: (n - 50)..<(n + 50), into: [MemoryTarget(memory)])
            XCTFail("a read past the end filled its target", file: file, line: line)
        } catch {}
        // A range that starts past the end is an error, not silence.
        for range in [n..<(n + 1), (n + 10)..<(n + 20)] {
            do {
                _ = try await store.get("ranges/object.bin", range: range)
                XCTFail("range \(range) past the end returned data", file: file, line: line)
            } catch {
                guard case .invalidRange = error else {
                    return XCTFail("expected invalidRange, got \(error)", file: file, line: line)
                }
            }
        }
    }

    /// put, list with prefixes, download into a file at an offset, delete.
    static func basics(_ store: some ObjectStore, file: StaticString = #filePath, line: UInt = #line) async throws {
        let keys = ["m/a.bin", "m/sub/b.bin", "m/sub/c d+e%f=g&h?é.bin", "n/other.bin"]
        for (i, key) in keys.enumerated() {
            try await store.put(key, bytes: Array(repeating: UInt8(i + 1), count: 1000 * (i + 1)))
        }
        let listed = try await store.list(prefix: "m/")
        XCTAssertEqual(listed.map(\.key), keys.filter { $0.hasPrefix("m/") }.sorted(), file: file, line: line)
        XCTAssertEqual(listed.map(\.size), [1000, 2000, 3000], file: file, line: line)
        for (i, key) in keys.enumerated() {
            let got = try await store.get(key)
            XCTAssertEqual(got, Array(repeating: UInt8(i + 1), count: 1000 * (i + 1)), key, file: file, line: line)
        }

        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/out"
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0)
        try await store.download(
            "m/sub/b.bin", range: 500..<1500, into: OutputFile(descriptor: fd, path: path), at: 100, ifMatch: nil,
            progress: nil)
        close(fd)
        let written = try Data(contentsOf: URL(fileURLWithPath: path))
        XCTAssertEqual(written.count, 1100, file: file, line: line)
        XCTAssertEqual(Array(written.suffix(1000)), Array(repeating: 2, count: 1000), file: file, line: line)

        try await store.delete("m/a.bin")
        try await store.delete("m/a.bin")  // deleting twice is fine
        do {
            _ = try await store.head("m/a.bin")
            XCTFail("deleted key still there", file: file, line: line)
        } catch {
            guard case .notFound = error else { return XCTFail("expected notFound, got \(error)", file: file, line: line) }
        }
    }

    /// A large object through ParallelDownloader: byte-identical, no partial left.
    static func parallelDownload(
        _ store: some ObjectStore, size: Int, file: StaticString = #filePath, line: UInt = #line
    ) async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let source = try randomFile(size: size, in: directory)
        try await store.upload("big/object.bin", fromFile: source, progress: nil)
        let uploaded = try await store.head("big/object.bin").size
        XCTAssertEqual(uploaded, UInt64(size), file: file, line: line)

        let counted = ByteCounter()
        let destination = directory + "/downloaded.bin"
        let result = try await ParallelDownloader(partSize: 8 << 20, concurrency: 8)
            .download("big/object.bin", from: store, to: destination, progress: counted.add)
        XCTAssertEqual(result.parts, (size + (8 << 20) - 1) / (8 << 20), file: file, line: line)
        XCTAssertEqual(counted.total, Int64(size), "progress adds up to the size", file: file, line: line)
        XCTAssertEqual(try Digest128.ofFile(atPath: destination), try Digest128.ofFile(atPath: source), file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: destination + ".partial"), file: file, line: line)
    }
}

/// Sums progress deltas from any thread.
final class ByteCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Int64 = 0

    var add: ProgressHandler { { [self] delta in lock.withLock { value += delta } } }
    var total: Int64 { lock.withLock { value } }
}
