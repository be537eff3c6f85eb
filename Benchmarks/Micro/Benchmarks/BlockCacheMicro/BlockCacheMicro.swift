// The RAM tier's hit path against memcpy of the same size (the floor), the
// index lookup, and xxh3-64 of a block (the check every load from NVMe pays).
import Benchmark
import BlockCache
import Foundation
import Integrity

let blockSize = 4 << 20

/// A 64 MiB blob on disk with its block digests, fully resident in a cache.
func residentBlob() -> (BlockCache, BlobSource) {
    let path = NSTemporaryDirectory() + "micro-\(getpid())-\(UUID().uuidString)"
    var generator = SystemRandomNumberGenerator()
    let bytes = (0..<(64 << 20) / 8).map { _ in generator.next() }.withUnsafeBytes { Array($0) }
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
    let digests = stride(from: 0, to: bytes.count, by: blockSize).map { xxh3_64(Array(bytes[$0..<$0 + blockSize])) }
    let source = BlobSource(digest: "micro", path: path, size: UInt64(bytes.count), blockSize: blockSize, blockDigests: digests)
    let cache = try! BlockCache(budgetBytes: 128 << 20, blockSize: blockSize, policy: .s3fifo, readAheadBlocks: 0)
    _ = try! cache.read(source, range: 0..<source.size)  // everything resident from here on
    unlink(path)
    return (cache, source)
}

/// 64 MiB to copy from, set up once outside every timed closure.
struct Source: @unchecked Sendable { let memory: UnsafeMutableRawBufferPointer }
let source64MiB: Source = {
    let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 20, alignment: 64)
    memory.initializeMemory(as: UInt8.self, repeating: 7)
    return Source(memory: memory)
}()

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration.maxDuration = .seconds(2)
    Benchmark.defaultConfiguration.metrics = [.wallClock, .throughput, .mallocCountTotal]
    let (cache, source) = residentBlob()

    for size in [4 << 10, 1 << 20] {
        let label = size == 4 << 10 ? "4 KiB" : "1 MiB"
        Benchmark("hit read \(label)") { benchmark in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
            defer { buffer.deallocate() }
            var offset: UInt64 = 12345
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                try cache.read(source, range: offset..<offset + UInt64(size), into: buffer)
                offset = (offset &* 2_862_933_555_777_941_757 &+ 3_037_000_493) % (source.size - UInt64(size))
            }
        }
        Benchmark("memcpy \(label) (baseline)") { benchmark in
            let to = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 64)
            defer { to.deallocate() }
            var offset = 12345
            for _ in benchmark.scaledIterations {
                to.baseAddress!.copyMemory(from: source64MiB.memory.baseAddress! + offset, byteCount: size)
                blackHole(to[0])
                offset = (offset &* 1_103_515_245 &+ 12_345) & ((32 << 20) - 1)  // stays inside the source
            }
        }
    }

    Benchmark("index lookup (isResident)") { benchmark in
        var block = 0
        for _ in benchmark.scaledIterations {
            blackHole(cache.isResident(blob: "micro", block: block))
            block = (block + 7) & 15
        }
    }

    Benchmark("xxh3-64 of a 4 MiB block", configuration: .init(metrics: [.wallClock, .throughput])) { benchmark in
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: blockSize, alignment: 64)
        defer { block.deallocate() }
        block.initializeMemory(as: UInt8.self, repeating: 3)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations { blackHole(xxh3_64(UnsafeRawBufferPointer(block))) }
    }
}
