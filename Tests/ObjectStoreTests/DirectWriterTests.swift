// DirectWriter on a real file: streams interleaved across its threads land
// where they belong and reach their observers front to back; an unaligned
// tail goes through the page cache; a failed write ends its stream with a
// prefix on disk and the errno; reads come back through O_DIRECT.
import Foundation
import ObjectStore
import Synchronization
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class DirectWriterTests: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "direct-writer-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Records what a stream's writes showed it, and checks the bytes then.
    final class Recorder: WriteObserver, @unchecked Sendable {
        let seen = Mutex<[(UInt64, Int)]>([])
        let wrongBytes = Atomic<Int>(0)
        func wrote(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) {
            for (i, byte) in bytes.enumerated() where byte != DirectWriterTests.pattern(offset + UInt64(i)) {
                wrongBytes.add(1, ordering: .relaxed)
                _ = i
            }
            seen.withLock { $0.append((offset, bytes.count)) }
        }
    }

    static func pattern(_ offset: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: offset &* 2_654_435_761 >> 7) }

    /// Fills `buffer` with the file's expected bytes from `offset`.
    func fill(_ buffer: UnsafeMutableRawBufferPointer, count: Int, from offset: UInt64) {
        for i in 0..<count { buffer[i] = Self.pattern(offset + UInt64(i)) }
    }

    func makeFile(size: Int, mode: Int32 = O_RDWR) throws -> (path: String, fd: Int32) {
        let path = directory + "/file"
        let create = open(path, O_RDWR | O_CREAT, 0o644)
        XCTAssertEqual(ftruncate(create, off_t(size)), 0)
        close(create)
        let fd = open(path, mode)
        XCTAssertGreaterThanOrEqual(fd, 0)
        return (path, fd)
    }

    func writer(_ file: (path: String, fd: Int32), bufferSize: Int = 64 << 10) throws -> DirectWriter {
        guard let writer = DirectWriter(path: file.path, buffered: file.fd, bufferSize: bufferSize, maxQueued: 2, threads: 2) else {
            throw XCTSkip("\(directory): this filesystem refuses O_DIRECT")
        }
        return writer
    }

    func drained(_ writer: DirectWriter, _ stream: DirectWriter.Stream) async -> (UInt64, (syscall: String, errno: Int32)?) {
        await withCheckedContinuation { continuation in
            writer.whenDrained(stream) { landed, failure in continuation.resume(returning: (landed, failure)) }
        }
    }

    func testInterleavedStreamsLandInPlaceAndInOrder() async throws {
        let chunk = 64 << 10
        let size = 5 * (1 << 20) + 1234  // the last write is not aligned
        let file = try makeFile(size: size)
        defer { close(file.fd) }
        let writer = try writer(file, bufferSize: chunk)
        defer { writer.close() }

        // Three ranged GETs of the file, their buffers handed over in turn.
        let ranges: [Range<Int>] = [0..<(2 << 20), (2 << 20)..<(4 << 20), (4 << 20)..<size]
        let recorders = ranges.map { _ in Recorder() }
        let progressed = Atomic<Int>(0)
        let streams = recorders.map { recorder in
            writer.makeStream(observer: recorder, progress: { progressed.add(Int($0), ordering: .relaxed) })
        }
        var next = ranges.map(\.lowerBound)
        while zip(next, ranges).contains(where: { $0 < $1.upperBound }) {
            for index in ranges.indices where next[index] < ranges[index].upperBound {
                let count = min(chunk, ranges[index].upperBound - next[index])
                let buffer = writer.take()
                fill(buffer, count: count, from: UInt64(next[index]))
                writer.submit(streams[index], buffer, count: count, at: UInt64(next[index]))
                next[index] += count
            }
        }
        for (index, stream) in streams.enumerated() {
            let (landed, failure) = await drained(writer, stream)
            XCTAssertEqual(landed, UInt64(ranges[index].count))
            XCTAssertNil(failure)
            // The observer saw the stream's bytes once each, front to back.
            let seen = recorders[index].seen.withLock { $0 }
            var expected = UInt64(ranges[index].lowerBound)
            for (offset, count) in seen {
                XCTAssertEqual(offset, expected, "stream \(index) out of order")
                expected = offset + UInt64(count)
            }
            XCTAssertEqual(expected, UInt64(ranges[index].upperBound))
            XCTAssertEqual(recorders[index].wrongBytes.load(ordering: .relaxed), 0)
        }
        XCTAssertEqual(progressed.load(ordering: .relaxed), size)

        // On disk, through the page cache, and back through O_DIRECT.
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: file.path))
        XCTAssertEqual(onDisk.count, size)
        XCTAssertTrue(onDisk.enumerated().allSatisfy { $0.element == Self.pattern(UInt64($0.offset)) })
        var readBack = Data()
        XCTAssertTrue(try writer.read(0..<UInt64(size)) { readBack.append(contentsOf: $0) })
        XCTAssertTrue(readBack == onDisk)
        var tail = Data()
        XCTAssertTrue(try writer.read(UInt64(size - 1234 - chunk)..<UInt64(size)) { tail.append(contentsOf: $0) })
        XCTAssertTrue(tail == onDisk.suffix(1234 + chunk))
        // An unaligned start is not O_DIRECT's to read: the caller reads it its own way.
        XCTAssertFalse(try writer.read(1..<100) { _ in XCTFail("read an unaligned range") })
    }

    func testAFailedWriteEndsItsStreamWithAPrefixOnDisk() async throws {
        let chunk = 64 << 10
        // The ordinary descriptor is read-only: an unaligned write through it fails.
        let file = try makeFile(size: 4 * chunk, mode: O_RDONLY)
        defer { close(file.fd) }
        let writer = try writer(file, bufferSize: chunk)
        defer { writer.close() }
        let stream = writer.makeStream(observer: nil, progress: nil)

        for (offset, count) in [(0, chunk), (chunk, 1000), (2 * chunk, chunk)] {
            let buffer = writer.take()
            fill(buffer, count: count, from: UInt64(offset))
            writer.submit(stream, buffer, count: count, at: UInt64(offset))
        }
        let (landed, failure) = await drained(writer, stream)
        XCTAssertEqual(landed, UInt64(chunk), "only the write before the failure counts")
        XCTAssertEqual(failure?.syscall, "pwrite")
        XCTAssertEqual(failure?.errno, EBADF)
        XCTAssertEqual(writer.failure(of: stream)?.errno, EBADF)
        // What came after the failure was dropped, not written.
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: file.path))
        XCTAssertTrue(onDisk.prefix(chunk).enumerated().allSatisfy { $0.element == Self.pattern(UInt64($0.offset)) })
        XCTAssertTrue(onDisk.suffix(2 * chunk).allSatisfy { $0 == 0 })
    }
}
