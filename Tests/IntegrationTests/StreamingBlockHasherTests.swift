// The block hasher a pull feeds from the download's writes: it must give a
// block's digest only when it saw every byte of it, in order, since the block
// was last started; otherwise the pull hashes the block from the file.
import Integrity
@testable import Staging
import XCTest

final class StreamingBlockHasherTests: XCTestCase {
    let blockSize = 4096
    let bytes: [UInt8] = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 7919 &+ 13) }

    func digest(ofBlock block: Int) -> UInt64 {
        xxh3_64(Array(bytes[block * blockSize..<min(bytes.count, (block + 1) * blockSize)]))
    }

    func write(_ hasher: StreamingBlockHasher, _ range: Range<Int>) {
        bytes.withUnsafeBytes { hasher.wrote(UnsafeRawBufferPointer(rebasing: $0[range]), at: UInt64(range.lowerBound)) }
    }

    func testInOrderChunksAcrossBlockBoundariesGiveEachBlocksDigest() {
        let hasher = StreamingBlockHasher(blockSize: blockSize, size: UInt64(bytes.count))
        var position = 0
        for chunk in [1000, 5000, 17, 3983] {  // chunks that straddle blocks
            write(hasher, position..<position + chunk)
            position += chunk
        }
        XCTAssertEqual(position, bytes.count)
        for block in 0..<3 { XCTAssertEqual(hasher.take(block), digest(ofBlock: block), "block \(block)") }
        XCTAssertNil(hasher.take(0), "a digest is handed out once")
    }

    func testAGapOrARepeatLeavesTheBlockWithoutADigest() {
        let hasher = StreamingBlockHasher(blockSize: blockSize, size: UInt64(bytes.count))
        write(hasher, 0..<100)
        write(hasher, 200..<blockSize)  // bytes 100..<200 never seen
        XCTAssertNil(hasher.take(0))
        write(hasher, blockSize..<blockSize + 50)
        write(hasher, blockSize + 40..<2 * blockSize)  // a repeat
        XCTAssertNil(hasher.take(1))
        write(hasher, 2 * blockSize..<bytes.count)
        XCTAssertEqual(hasher.take(2), digest(ofBlock: 2))
    }

    func testARetryStartingAgainAtTheBlockStartIsHashedAfresh() {
        let hasher = StreamingBlockHasher(blockSize: blockSize, size: UInt64(bytes.count))
        write(hasher, 0..<3000)  // a failed attempt
        write(hasher, 0..<blockSize)  // the retry, whole
        XCTAssertEqual(hasher.take(0), digest(ofBlock: 0))
    }

    func testStreamingXXH3MatchesOneShot() {
        let streaming = Hasher64()
        bytes.withUnsafeBytes { all in
            streaming.update(UnsafeRawBufferPointer(rebasing: all[0..<3]))
            streaming.update(UnsafeRawBufferPointer(rebasing: all[3...]))
        }
        XCTAssertEqual(streaming.finalize(), xxh3_64(bytes))
        streaming.reset()
        XCTAssertEqual(streaming.finalize(), xxh3_64([UInt8]()))
    }
}
