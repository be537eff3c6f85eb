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
        guard let writer = DirectWriter(
            path: file.path, buffered: file.fd, pool: DirectBuffers(limit: 0), bufferSize: bufferSize, maxQueued: 2, threads: 2)
        else {
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
        try writer.read(0..<UInt64(size)) { readBack.append(contentsOf: $0) }
        XCTAssertTrue(readBack == onDisk)
        var tail = Data()
        try writer.read(UInt64(size - 1234 - chunk)..<UInt64(size)) { tail.append(contentsOf: $0) }
        XCTAssertTrue(tail == onDisk.suffix(1234 + chunk))
        // An unaligned start is not O_DIRECT's to read: it comes through the page cache.
        var odd = Data()
        try writer.read(1..<100) { odd.append(contentsOf: $0) }
        XCTAssertTrue(odd == onDisk[1..<100])
        // This writer keeps nothing: every byte came back from disk.
        XCTAssertEqual(writer.readSources.memory, 0)
        XCTAssertEqual(writer.readSources.disk, UInt64(size + 1234 + chunk + 99))
    }

    /// One buffer may wait for the disk: every submit after the first finds
    /// the queue full until a write lands, and that wait is what the writer
    /// reports. A writer given nothing has waited for nothing.
    func testWaitsForTheDiskAreCounted() async throws {
        let chunk = 1 << 20
        let count = 16
        let file = try makeFile(size: count * chunk)
        defer { close(file.fd) }
        guard let writer = DirectWriter(
            path: file.path, buffered: file.fd, pool: DirectBuffers(limit: 0), bufferSize: chunk, maxQueued: 1, threads: 1)
        else { throw XCTSkip("\(directory): this filesystem refuses O_DIRECT") }
        defer { writer.close() }
        XCTAssertEqual(writer.waitedForDisk, .zero)
        let stream = writer.makeStream(observer: nil, progress: nil)
        // Filled first (`take` never waits), then handed over back to back:
        // no submit is slower than the write before it.
        let buffers = (0..<count).map { piece in
            let buffer = writer.take()
            fill(buffer, count: chunk, from: UInt64(piece * chunk))
            return buffer
        }
        for (piece, buffer) in buffers.enumerated() {
            writer.submit(stream, buffer, count: chunk, at: UInt64(piece * chunk))
        }
        let (landed, failure) = await drained(writer, stream)
        XCTAssertEqual(landed, UInt64(count * chunk))
        XCTAssertNil(failure)
        // 15 submits each waited for a 1 MiB O_DIRECT write to finish.
        XCTAssertGreaterThan(writer.waitedForDisk, .zero)
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: file.path))
        XCTAssertTrue(onDisk.enumerated().allSatisfy { $0.element == Self.pattern(UInt64($0.offset)) })
    }

    /// Writes `pieces` (offsets, `chunk` bytes each) through one stream, in
    /// that order, with `bytes(offset)` as their content, and waits for them.
    func write(
        _ writer: DirectWriter, pieces: [Int], chunk: Int, bytes: (UInt64) -> UInt8 = DirectWriterTests.pattern
    ) async {
        let stream = writer.makeStream(observer: nil, progress: nil)
        for offset in pieces {
            let buffer = writer.take()
            for i in 0..<chunk { buffer[i] = bytes(UInt64(offset + i)) }
            writer.submit(stream, buffer, count: chunk, at: UInt64(offset))
        }
        let (landed, failure) = await drained(writer, stream)
        XCTAssertEqual(landed, UInt64(pieces.count * chunk))
        XCTAssertNil(failure)
    }

    func testKeptBuffersAreReadFromMemoryNearestFirst() async throws {
        let chunk = 64 << 10
        let file = try makeFile(size: 6 * chunk)
        defer { close(file.fd) }
        // Room for two buffers: the one just written and one kept.
        let pool = DirectBuffers(limit: 2 * chunk)
        guard let writer = DirectWriter(
            path: file.path, buffered: file.fd, pool: pool, bufferSize: chunk, maxQueued: 2, threads: 2)
        else { throw XCTSkip("\(directory): this filesystem refuses O_DIRECT") }
        defer { writer.close() }

        // One piece at a time, so that the pool holds only kept buffers and
        // the one being written. Piece 0 first lands as garbage, then again
        // as it should be (a part fetched again): the later write is kept.
        // Piece 3 is kept, then let go for piece 1, which is nearer the
        // reader; piece 2, farther than the kept ones, is not kept.
        await write(writer, pieces: [0], chunk: chunk) { _ in 0xEE }
        for piece in [3, 0, 1, 2] { await write(writer, pieces: [piece * chunk], chunk: chunk) }
        XCTAssertEqual(pool.held.now, 2 * chunk, "pieces 0 and 1 kept")

        var bytes = Data()
        try writer.read(0..<UInt64(4 * chunk)) { bytes.append(contentsOf: $0) }
        XCTAssertTrue(bytes.enumerated().allSatisfy { $0.element == Self.pattern(UInt64($0.offset)) })
        XCTAssertEqual(writer.readSources.memory, UInt64(2 * chunk), "pieces 0 and 1 from memory")
        XCTAssertEqual(writer.readSources.disk, UInt64(2 * chunk), "pieces 2 and 3 read back")
        XCTAssertEqual(pool.held.now, 0, "every buffer given back")

        // Below what has been read nothing is kept any more; past it, again.
        await write(writer, pieces: [chunk], chunk: chunk)
        await write(writer, pieces: [4 * chunk], chunk: chunk)
        XCTAssertEqual(pool.held.now, chunk)
        var more = Data()
        try writer.read(UInt64(4 * chunk)..<UInt64(5 * chunk)) { more.append(contentsOf: $0) }
        XCTAssertTrue(more.enumerated().allSatisfy { $0.element == Self.pattern(UInt64(4 * chunk + $0.offset)) })
        XCTAssertEqual(writer.readSources.memory, UInt64(3 * chunk))
        XCTAssertEqual(writer.readSources.disk, UInt64(2 * chunk))
        XCTAssertEqual(pool.held.now, 0)

        // What was taken from memory is what the disk holds.
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: file.path))
        XCTAssertTrue(onDisk.prefix(5 * chunk).enumerated().allSatisfy { $0.element == Self.pattern(UInt64($0.offset)) })
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
