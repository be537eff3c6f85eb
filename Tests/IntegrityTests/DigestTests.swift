import Foundation
import Integrity
import XCTest

final class DigestTests: XCTestCase {
    // Reference values printed by xxhash's own CLI 0.8.1 (`xxh128sum`, `xxhsum -H3`).
    func testKnownVectors() {
        XCTAssertEqual(Digest128.of([UInt8]()).description, "99aa06d3014798d86001c324468d497f")
        XCTAssertEqual(Digest128.of(Array("hello\n".utf8)).description, "6bba86c7e069f56d5a10b435f1c8e49c")
        XCTAssertEqual(hex16(xxh3_64(Array("abc".utf8))), "78af5f94892f3950")
    }

    func testStreamingMatchesOneShot() {
        var bytes = [UInt8](repeating: 0, count: 3_000_001)
        var rng = SystemRandomNumberGenerator()
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &rng) }
        var hasher = Hasher128()
        bytes.withUnsafeBytes { all in
            var offset = 0
            for step in [1, 7, 4096, 1 << 20, 65_537] where offset < all.count {
                let end = min(all.count, offset + step)
                hasher.update(UnsafeRawBufferPointer(rebasing: all[offset..<end]))
                offset = end
            }
            hasher.update(UnsafeRawBufferPointer(rebasing: all[offset...]))
        }
        XCTAssertEqual(hasher.finalize(), Digest128.of(bytes))
    }

    func testFileDigestAndErrors() throws {
        let path = NSTemporaryDirectory() + "digest-\(UUID().uuidString)"
        let bytes = (0..<(9 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        XCTAssertEqual(try Digest128.ofFile(atPath: path), Digest128.of(bytes))
        XCTAssertThrowsError(try Digest128.ofFile(atPath: path + "-missing")) { error in
            XCTAssertEqual((error as? FileDigestError)?.syscall, "open")
        }
    }

    func testHexRoundTrip() {
        let d = Digest128(high: 0x0123_4567_89ab_cdef, low: 0x10)
        XCTAssertEqual(d.description, "0123456789abcdef0000000000000010")
        XCTAssertEqual(Digest128(hex: d.description), d)
        XCTAssertNil(Digest128(hex: "xyz"))
    }
}

