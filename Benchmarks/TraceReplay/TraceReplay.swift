// trace-replay: each eviction policy, with and without sequential prefetch,
// on synthetic traces of how inference fleets read weights. Block-level and
// deterministic (seeded), so it runs in a second and its numbers repeat.
//
//   swift run -c release trace-replay
//
// Every miss is a block loaded from the tier below; "loads" counts misses
// plus prefetches, the bytes the RAM tier pulls from below in blocks. The node
// starts cold: a block's first load comes from S3 (read-through), and from
// then on it is on NVMe (staging keeps everything here), so later loads of it
// come from NVMe. Bytes assume 4 MiB blocks.
import BlockCache
import Foundation

struct Access {
    var reader: Int
    var blob: String
    var block: Int
    var blockCount: Int
    /// Counted in the "hot" hit ratio (the scan trace reports the hot model alone).
    var hot: Bool = true
}

struct Trace {
    var name: String
    var capacity: Int
    var accesses: [Access]
}

/// splitmix64: seeded, so traces are identical on every run.
struct Seeded: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func traces() -> [Trace] {
    var rng = Seeded(state: 42)
    var all: [Trace] = []

    // One reader loading a 1,000-block model front to back; RAM holds a quarter of it.
    all.append(Trace(name: "sequential load", capacity: 256, accesses: (0..<1000).map {
        Access(reader: 0, blob: "m", block: $0, blockCount: 1000)
    }))

    // Four tensor-parallel ranks; each reads its quarter of every tensor (50 tensors x 40 blocks).
    var tp: [Access] = []
    for tensor in 0..<50 {
        for offset in 0..<10 {
            for rank in 0..<4 {
                tp.append(Access(reader: rank, blob: "m", block: tensor * 40 + rank * 10 + offset, blockCount: 2000))
            }
        }
    }
    all.append(Trace(name: "tensor-parallel x4", capacity: 256, accesses: tp))

    // Two 400-block models loaded in turn, four times, under 1.5x one model.
    var alternating: [Access] = []
    for round in 0..<8 {
        let blob = round % 2 == 0 ? "a" : "b"
        alternating += (0..<400).map { Access(reader: round, blob: blob, block: $0, blockCount: 400) }
    }
    all.append(Trace(name: "two models, 1.5x budget", capacity: 600, accesses: alternating))

    // Ten 100-block models, popularity Zipf(1): loads of whole models, by popularity.
    let weights = (1...10).map { 1.0 / Double($0) }
    let total = weights.reduce(0, +)
    var zipf: [Access] = []
    for load in 0..<60 {
        var pick = Double.random(in: 0..<total, using: &rng)
        var model = 0
        while pick >= weights[model] { pick -= weights[model]; model += 1 }
        zipf += (0..<100).map { Access(reader: load, blob: "z\(model)", block: $0, blockCount: 100) }
    }
    all.append(Trace(name: "Zipf over 10 models", capacity: 300, accesses: zipf))

    // A hot 200-block model keeps being read (random blocks) while a cold
    // 3,000-block model is scanned once; hit ratio of the hot model only.
    var scan: [Access] = []
    for _ in 0..<2 { for b in 0..<200 { scan.append(Access(reader: 1, blob: "hot", block: b, blockCount: 200)) } }
    for b in 0..<3000 {
        scan.append(Access(reader: 0, blob: "cold", block: b, blockCount: 3000, hot: false))
        scan.append(Access(reader: 1, blob: "hot", block: Int.random(in: 0..<200, using: &rng), blockCount: 200))
    }
    all.append(Trace(name: "scan beside a hot model", capacity: 300, accesses: scan))
    return all
}

struct Result {
    var hitRatio: Double
    var loads: Int
    var prefetchedUnused: Int
    var fromNVMe: Int
    var fromStore: Int
}

func replay(_ trace: Trace, _ kind: PolicyKind, prefetch: Bool) -> Result {
    var cache = PolicySimulator(kind, capacity: trace.capacity)
    var prefetcher = SequentialPrefetcher(initialWindow: 2, maxWindow: 32)
    var hits = 0
    var counted = 0
    var prefetches = 0
    var staged = Set<BlockKey>()
    var fromNVMe = 0
    var fromStore = 0
    func load(_ key: BlockKey) {
        if staged.insert(key).inserted { fromStore += 1 } else { fromNVMe += 1 }
    }
    for access in trace.accesses {
        let key = BlockKey(blob: access.blob, block: access.block)
        let hit = cache.access(key)
        if !hit { load(key) }
        if access.hot {
            counted += 1
            if hit { hits += 1 }
        }
        guard prefetch else { continue }
        for ahead in prefetcher.accessed(
            reader: access.reader, blob: access.blob, block: access.block, blockCount: access.blockCount)
        {
            let key = BlockKey(blob: access.blob, block: ahead)
            if !cache.isResident(key) {
                prefetches += 1
                load(key)
            }
            cache.prefetch(key)
        }
    }
    return Result(
        hitRatio: Double(hits) / Double(max(1, counted)), loads: cache.misses + prefetches,
        prefetchedUnused: cache.prefetchedUnused + cache.prefetchedPending, fromNVMe: fromNVMe, fromStore: fromStore)
}

@main
enum TraceReplay {
    static func main() {
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
        func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
        print("trace (RAM capacity in blocks)          policy   prefetch  hit ratio   loads  prefetched unused  NVMe MiB   S3 MiB")
        print(String(repeating: "-", count: 116))
        for trace in traces() {
            for kind in PolicyKind.allCases {
                for prefetch in [false, true] {
                    let r = replay(trace, kind, prefetch: prefetch)
                    print(
                        pad("\(trace.name) (\(trace.capacity))", 39) + pad(kind.rawValue, 9) + pad(prefetch ? "on" : "off", 10)
                            + lpad(String(format: "%.1f%%", r.hitRatio * 100), 9) + lpad(String(r.loads), 8)
                            + lpad(String(r.prefetchedUnused), 19) + lpad(String(r.fromNVMe * 4), 10) + lpad(String(r.fromStore * 4), 9))
                }
            }
        }
        print("(hit ratio of reads; for the scan trace, of the hot model's reads only; loads = misses + prefetches;")
        print(" a cold node: each block's first load comes from S3, later ones from NVMe; 4 MiB blocks)")
    }
}
