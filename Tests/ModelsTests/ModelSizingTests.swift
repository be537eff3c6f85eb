import Models
import XCTest

final class ModelSizingTests: XCTestCase {
    func header(_ tensors: [(String, String, [Int], Int)]) -> [UInt8] {
        var offset = 0
        var entries: [String] = ["\"__metadata__\": {\"format\": \"pt\"}"]
        for (name, dtype, shape, bytes) in tensors {
            entries.append("\"\(name)\": {\"dtype\": \"\(dtype)\", \"shape\": \(shape), \"data_offsets\": [\(offset), \(offset + bytes)]}")
            offset += bytes
        }
        return Array(("{" + entries.joined(separator: ", ") + "}").utf8)
    }

    func testCountsParametersDtypesAndGPUs() throws {
        var sizing = ModelSizing()
        try sizing.add(header: header([("embed", "BF16", [1000, 64], 128_000), ("norm", "F32", [64], 256)]), shard: "a")
        try sizing.add(header: header([("q", "F8_E4M3", [64, 64], 4096), ("packed", "F4", [10], 5)]), shard: "b")
        XCTAssertEqual(sizing.shards, 2)
        XCTAssertEqual(sizing.tensors, 4)
        XCTAssertEqual(sizing.totalParameters, 64_000 + 64 + 4096 + 10)
        XCTAssertEqual(sizing.parameters["BF16"], 64_000)
        XCTAssertEqual(sizing.totalBytes, 128_000 + 256 + 4096 + 5)
        XCTAssertEqual(sizing.bytes(atBits: 16), 2 * 68_170)
        XCTAssertEqual(sizing.bytes(atBits: 4), 68_170 / 2)
        // 140 GB of bf16 weights on 80 GB GPUs keeping 20% for the KV cache: 64 GB each -> 3.
        XCTAssertEqual(ModelSizing.gpus(for: 140_000_000_000, memory: 80_000_000_000, headroom: 0.2), 3)
        XCTAssertEqual(ModelSizing.gpus(for: 1, memory: 80_000_000_000, headroom: 0.2), 1)
    }

    func testRejectsHeadersThatLie() {
        var sizing = ModelSizing()
        XCTAssertThrowsError(try sizing.add(header: Array("not json".utf8), shard: "x"))
        XCTAssertThrowsError(try sizing.add(header: header([("t", "BF16", [10], 21)]), shard: "x"))  // 10 bf16 = 20 bytes
        XCTAssertThrowsError(try sizing.add(header: header([("t", "Q4_K", [10], 5)]), shard: "x"))
        XCTAssertEqual(sizing.tensors, 0)
    }
}
