// hostile-bench: a well-behaved client's 4 KiB read latency, alone and then
// while hostile clients attack the daemon (Benchmarks/hostile-clients.sh):
//   - a connection flood: 1,000 connections opened and held (past
//     daemon.maxConnections they are refused);
//   - endless frames: garbage and oversized headers sent in a loop;
//   - idle holders: connections that say hello and nothing more;
//   - vanishing readers: 8 MiB reads whose sender closes before the reply.
// Then the attackers stop and the daemon's descriptors and RSS are compared
// with their values before the attack. Target: p99 under attack within 3x of
// the unloaded p99, descriptors and RSS back to baseline.
import Foundation
import UnixSocket
import WeightCacheClient
import Wire

#if canImport(Glibc)
import Glibc
#endif

@main
struct HostileBench {
    static func main() throws {
        let arguments = CommandLine.arguments
        guard arguments.count >= 5, let pid = Int32(arguments[4]) else {
            print("usage: hostile-bench SOCKET MODEL PATH DAEMON_PID [SECONDS]")
            exit(2)
        }
        let (socket, model, path) = (arguments[1], arguments[2], arguments[3])
        let seconds = arguments.count > 5 ? Double(arguments[5]) ?? 5 : 5
        let client = try DaemonClient(path: socket, name: "well-behaved")
        let size = Int(try client.stat(model, path: path).size)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        func measure() throws -> [Double] {
            var samples: [Double] = []
            var rng = SystemRandomNumberGenerator()
            let stop = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
            while ContinuousClock.now < stop {
                let start = ContinuousClock.now
                _ = try client.read(model, path: path, offset: UInt64(Int.random(in: 0..<(size - 4096), using: &rng)), into: buffer)
                let d = (ContinuousClock.now - start).components
                samples.append(Double(d.seconds) * 1e6 + Double(d.attoseconds) / 1e12)
            }
            return samples.sorted()
        }
        _ = try measure()  // warm
        usleep(500_000)
        let baseFDs = descriptors(pid)
        let baseRSS = rss(pid)
        let alone = try measure()

        let stop = Flag()
        var threads = 0
        let done = DispatchGroup()
        func attacker(_ body: @escaping @Sendable () -> Void) {
            threads += 1
            done.enter()
            Thread {
                while !stop.isSet { body() }
                done.leave()
            }.start()
        }
        let hello = Request.hello(Hello(client: "hostile")).frame(request: 1).encoded
        let held = Holder()
        // The flood: open and keep up to 1,000 connections (refused ones close at once).
        attacker {
            if held.count < 1000, let s = try? UnixSocket.connect(path: socket) { held.add(s) } else { _ = usleep(1000) }
        }
        // Endless frames of garbage and absurd lengths.
        attacker {
            guard let s = try? UnixSocket.connect(path: socket) else {
                usleep(1000)
                return
            }
            var rng = SystemRandomNumberGenerator()
            for _ in 0..<64 { try? s.send((0..<256).map { _ in UInt8.random(in: 0...255, using: &rng) }) }
            try? s.send([0xFF, 0xFF, 0xFF, 0x7F, 1, 0, 0, 0, 0, 0, 0, 0])
            s.close()
        }
        // Idle holders: hello, then silence (they count against the limit too).
        attacker {
            if held.count < 1000, let s = try? UnixSocket.connect(path: socket) {
                try? s.send(hello)
                held.add(s)
            } else { _ = usleep(1000) }
        }
        // Vanishing readers: ask for 8 MiB and close.
        attacker {
            guard let s = try? UnixSocket.connect(path: socket) else {
                usleep(1000)
                return
            }
            try? s.send(hello + Request.read(model: model, path: path, offset: 0, length: 8 << 20).frame(request: 2).encoded)
            s.close()
        }
        usleep(500_000)
        let attacked = try measure()
        let heldCount = held.count
        stop.set()
        done.wait()
        held.closeAll()
        // Back to baseline: the daemon closes what the attackers left.
        var fds = descriptors(pid)
        for _ in 0..<100 where fds > baseFDs {
            usleep(100_000)
            fds = descriptors(pid)
        }
        let after = rss(pid)
        func p(_ s: [Double], _ q: Double) -> Double { s[min(s.count - 1, Int(Double(s.count) * q))] }
        print("| well-behaved 4 KiB reads | samples | p50 µs | p99 µs | p99 / alone |")
        print("|---|---|---|---|---|")
        print(String(format: "| alone | %d | %.1f | %.1f | 1.00 |", alone.count, p(alone, 0.5), p(alone, 0.99)))
        print(String(format: "| under attack (%d attackers, %d connections held) | %d | %.1f | %.1f | %.2f |",
            threads, heldCount, attacked.count, p(attacked, 0.5), p(attacked, 0.99), p(attacked, 0.99) / p(alone, 0.99)))
        print("daemon descriptors: \(baseFDs) before, \(fds) after; RSS \(baseRSS / 1024) MiB before, \(after / 1024) MiB after")
        _ = try client.stats()  // and it still answers
    }

    static func descriptors(_ pid: Int32) -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1 }

    static func rss(_ pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return -1 }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? -1
    }
}

final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}

final class Holder: @unchecked Sendable {
    private let lock = NSLock()
    private var sockets: [UnixSocket] = []
    var count: Int { lock.withLock { sockets.count } }
    func add(_ s: UnixSocket) { lock.withLock { sockets.append(s) } }
    func closeAll() { lock.withLock { sockets.forEach { $0.close() }; sockets.removeAll() } }
}
