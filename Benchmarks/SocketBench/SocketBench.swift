// socket-bench: the socket API against the kernel paths it competes with, in
// one process, interleaved round by round (see Benchmarks/socket-api.sh).
//
//   throughput: `read` of a RAM-resident file over the socket, 8 MiB at a
//               time, vs pread of the staged file from the page cache.
//   mmap:       `open` (fd passed) + mmap + touch every page vs open + mmap
//               of the staged file directly.
//   latency:    4 KiB random reads over the socket with 1 and 8 clients:
//               p50 and p99.
import Foundation
import WeightCacheClient

#if canImport(Glibc)
import Glibc
#endif

@main
struct SocketBench {
    static func main() throws {
        let arguments = CommandLine.arguments
        guard arguments.count >= 6 else {
            print("usage: socket-bench SOCKET MODEL PATH STAGED_FILE ROUNDS")
            exit(2)
        }
        let (socket, model, path, staged, rounds) = (arguments[1], arguments[2], arguments[3], arguments[4], Int(arguments[5]) ?? 5)
        let client = try DaemonClient(path: socket, name: "socket-bench")
        let size = Int(try client.stat(model, path: path).size)
        let chunk = Int(client.hello.maxReadLength)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }

        func socketRead() throws -> Double {
            let start = ContinuousClock.now
            var offset = 0
            while offset < size {
                offset += try client.read(model, path: path, offset: UInt64(offset), into: buffer)
            }
            return seconds(since: start)
        }
        func fileRead() -> Double {
            let start = ContinuousClock.now
            let fd = open(staged, O_RDONLY)
            var offset = 0
            while offset < size {
                let n = pread(fd, buffer.baseAddress, chunk, off_t(offset))
                precondition(n > 0)
                offset += n
            }
            close(fd)
            return seconds(since: start)
        }
        func touch(_ fd: Int32) -> Double {
            let start = ContinuousClock.now
            let map = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0)!
            var sum: UInt64 = 0
            let bytes = map.assumingMemoryBound(to: UInt8.self)
            for page in stride(from: 0, to: size, by: 4096) { sum &+= UInt64(bytes[page]) }
            munmap(map, size)
            close(fd)
            blackHole(sum)
            return seconds(since: start)
        }
        func socketMap() throws -> Double {
            let start = ContinuousClock.now
            _ = touch(try client.open(model, path: path).descriptor)
            return seconds(since: start)
        }

        // Warm both paths once (page cache, RAM tier), then interleave.
        _ = try socketRead()
        _ = fileRead()
        var results: [String: [Double]] = [:]
        for _ in 0..<rounds {
            results["pread", default: []].append(fileRead())
            results["socket read", default: []].append(try socketRead())
            results["mmap direct", default: []].append(touch(open(staged, O_RDONLY)))
            results["open+mmap", default: []].append(try socketMap())
        }
        let mib = Double(size) / 1_048_576
        print("file: \(model) \(path), \(size) bytes; \(rounds) interleaved rounds after a warm-up")
        print("| path | median MiB/s | min | max | ratio |")
        print("|---|---|---|---|---|")
        for (name, base) in [("pread", "pread"), ("socket read", "pread"), ("mmap direct", "mmap direct"), ("open+mmap", "mmap direct")] {
            let rates = results[name]!.map { mib / $0 }.sorted()
            let baseline = median(results[base]!.map { mib / $0 })
            print(String(format: "| %@ | %.0f | %.0f | %.0f | %.2f |", name, median(rates), rates.first!, rates.last!, median(rates) / baseline))
        }

        for clients in [1, 8] {
            var all: [[Double]] = []
            for _ in 0..<rounds { all.append(try latencies(socket: socket, model: model, path: path, size: size, clients: clients)) }
            let p50 = all.map { percentile($0, 0.50) }
            let p99 = all.map { percentile($0, 0.99) }
            let reads = all.map(\.count).reduce(0, +) / rounds
            print(String(format: "4 KiB random reads, %d client(s): p50 %.1f µs, p99 %.1f µs (medians of %d rounds; min-max p99 %.1f-%.1f; %d reads/round)",
                clients, median(p50), median(p99), rounds, p99.min()!, p99.max()!, reads))
        }
    }

    /// Each client reads random 4 KiB ranges for a second; every latency in µs.
    static func latencies(socket: String, model: String, path: String, size: Int, clients: Int) throws -> [Double] {
        let samples = Samples()
        let group = DispatchGroup()
        let stop = ContinuousClock.now + .seconds(1)
        for _ in 0..<clients {
            group.enter()
            let thread = Thread {
                defer { group.leave() }
                guard let client = try? DaemonClient(path: socket, name: "latency") else { return }
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
                defer { buffer.deallocate() }
                var local: [Double] = []
                var rng = SystemRandomNumberGenerator()
                while ContinuousClock.now < stop {
                    let offset = UInt64(Int.random(in: 0..<(size - 4096), using: &rng))
                    let start = ContinuousClock.now
                    _ = try? client.read(model, path: path, offset: offset, into: buffer)
                    local.append(seconds(since: start) * 1e6)
                }
                samples.add(local)
            }
            thread.start()
        }
        group.wait()
        return samples.all
    }

    final class Samples: @unchecked Sendable {
        private let lock = NSLock()
        private var values: [Double] = []
        func add(_ more: [Double]) { lock.withLock { values += more } }
        var all: [Double] { lock.withLock { values } }
    }

    static func seconds(since start: ContinuousClock.Instant) -> Double {
        let d = ContinuousClock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
    static func median(_ values: [Double]) -> Double {
        let s = values.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
    static func percentile(_ values: [Double], _ p: Double) -> Double {
        let s = values.sorted()
        return s[min(s.count - 1, Int(Double(s.count) * p))]
    }
    @inline(never) static func blackHole(_ value: UInt64) { if value == 1 { print("") } }
}
