import Compression
import XCTest

@testable import Models

final class LZ4FrameTests: XCTestCase {
    func roundTrip(_ bytes: [UInt8]) throws -> [UInt8] {
        let frame = bytes.withUnsafeBytes { LZ4Frame.compress($0) }
        var output = [UInt8](repeating: 0, count: bytes.count)
        try frame.withUnsafeBytes { input in
            try output.withUnsafeMutableBytes { try LZ4Frame.decompress(input, into: $0) }
        }
        return output
    }

    func testRoundTrips() throws {
        var generator = SystemRandomNumberGenerator()
        let random = (0..<(1 << 20)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let repetitive = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 / 7) }
        for bytes in [[], [42], random, repetitive] {
            XCTAssertTrue(try roundTrip(bytes) == bytes, "\(bytes.count) bytes")
        }
        let frame = repetitive.withUnsafeBytes { LZ4Frame.compress($0) }
        XCTAssertLessThan(frame.count, repetitive.count / 10)
    }

    func testCorruptTruncatedAndMisSizedFramesAreErrors() throws {
        let bytes = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 * 31 / 5) }
        let frame = bytes.withUnsafeBytes { LZ4Frame.compress($0) }
        var output = [UInt8](repeating: 0, count: bytes.count)
        var bad = frame
        bad[bad.count / 2] ^= 0xFF
        bad[4] ^= 0xFF  // the frame descriptor too
        for (name, input, size) in [
            ("corrupt", bad, bytes.count), ("truncated", Array(frame.prefix(frame.count / 2)), bytes.count),
            ("too small an output", frame, bytes.count - 1), ("garbage", [UInt8](repeating: 7, count: 64), bytes.count),
        ] {
            output = [UInt8](repeating: 0, count: size)
            XCTAssertThrowsError(
                try input.withUnsafeBytes { i in try output.withUnsafeMutableBytes { try LZ4Frame.decompress(i, into: $0) } },
                name)
        }
    }

    func testLZ4ManifestEntriesNeedOneFramePerBlock() throws {
        let model = try ModelReference(parsing: "m")
        var file = Manifest.File(
            path: "w.bin", object: "w.bin.lz4", size: 3 << 20, xxh3_128: String(repeating: "a", count: 32),
            blocks: Array(repeating: String(repeating: "b", count: 16), count: 3), encoding: .lz4, frames: [10, 20, 30])
        XCTAssertNoThrow(try Manifest(model: model, blockSize: 1 << 20, files: [file]).validate(for: model))
        XCTAssertEqual(file.storedSize, 60)
        file.frames = [10, 20]
        XCTAssertThrowsError(try Manifest(model: model, blockSize: 1 << 20, files: [file]).validate(for: model))
        file.frames = [10, 20, 0]
        XCTAssertThrowsError(try Manifest(model: model, blockSize: 1 << 20, files: [file]).validate(for: model))
        file.encoding = .raw
        file.frames = [1, 2, 3]
        XCTAssertThrowsError(try Manifest(model: model, blockSize: 1 << 20, files: [file]).validate(for: model))
    }
}
