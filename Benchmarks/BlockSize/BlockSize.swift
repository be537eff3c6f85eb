// block-size: how the RAM tier's block size (ramCache.blockSize, which pushes
// also use for their per-block digests) trades sequential throughput against
// the cost of a random miss. For each size, in one process, interleaved
// round by round on the same page-cached file:
//   - sequential: the whole file read through an empty cache in 1 MiB reads,
//     read-ahead on (a model load): MiB/s;
//   - random miss: 4 KiB reads at random offsets of an empty cache (each a
//     miss: a whole block is read and its xxh3-64 checked): p50 and p99.
//
//   swift run -c release block-size FILE [ROUNDS]
import BlockCache
import Foundation
import Integrity

@main
struct BlockSizeBench {
    static func main() throws {
        let arguments = CommandLine.arguments
        guard arguments.count >= 2 else {
            print("usage: block-size FILE [ROUNDS]")
            exit(2)
        }
        let path = arguments[1]
        let rounds = arguments.count > 2 ? Int(arguments[2]) ?? 3 : 3
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let sizes = [1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20]
        var sources: [Int: BlobSource] = [:]
        for size in sizes {
            let digests = bytes.withUnsafeBytes { raw in
                stride(from: 0, to: raw.count, by: size).map { xxh3_64(UnsafeRawBufferPointer(rebasing: raw[$0..<min(raw.count, $0 + size)])) }
            }
            sources[size] = BlobSource(digest: "b\(size)", path: path, size: UInt64(bytes.count), blockSize: size, blockDigests: digests)
        }
        var sequential: [Int: [Double]] = [:]
        var random: [Int: [Double]] = [:]
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        for _ in 0..<rounds {
            for size in sizes {
                let source = sources[size]!
                // Sequential, cold cache, read-ahead of 32 MiB.
                var cache = try BlockCache(budgetBytes: 512 << 20, blockSize: size, policy: .s3fifo, readAheadBlocks: max(1, (32 << 20) / size))
                var start = ContinuousClock.now
                var offset: UInt64 = 0
                while offset < source.size {
                    let end = min(source.size, offset + (1 << 20))
                    try cache.read(source, range: offset..<end, into: buffer)
                    offset = end
                }
                sequential[size, default: []].append(Double(source.size) / 1_048_576 / seconds(since: start))
                // Random 4 KiB misses, cold cache, no read-ahead.
                cache = try BlockCache(budgetBytes: 512 << 20, blockSize: size, policy: .s3fifo, readAheadBlocks: 0)
                var rng = SystemRandomNumberGenerator()
                var samples: [Double] = []
                var touched = Set<Int>()
                let wanted = min(64, source.blockDigests.count / 2)  // misses only: at most half the blocks
                while samples.count < wanted {
                    let at = UInt64.random(in: 0..<source.size - 4096, using: &rng)
                    guard touched.insert(Int(at) / size).inserted else { continue }  // misses only
                    start = ContinuousClock.now
                    try cache.read(source, range: at..<at + 4096, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<4096]))
                    samples.append(seconds(since: start) * 1e6)
                }
                random[size, default: []] += samples
            }
        }
        print("file: \(path), \(bytes.count) bytes, page-cached; \(rounds) interleaved rounds")
        print("| block size | sequential MiB/s (median, min-max) | 4 KiB miss p50 µs | p99 µs | slots in a 8 GiB budget |")
        print("|---|---|---|---|---|")
        for size in sizes {
            let s = sequential[size]!.sorted()
            let r = random[size]!.sorted()
            print(String(format: "| %d MiB | %.0f (%.0f-%.0f) | %.0f | %.0f | %d |", size >> 20, s[s.count / 2], s.first!, s.last!,
                r[r.count / 2], r[min(r.count - 1, r.count * 99 / 100)], (8 << 30) / size))
        }
    }

    static func seconds(since start: ContinuousClock.Instant) -> Double {
        let d = ContinuousClock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}
