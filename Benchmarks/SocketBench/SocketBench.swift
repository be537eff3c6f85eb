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
import UnixSocket
import WeightCacheClient

#if canImport(Glibc)
import Glibc
#endif

@main
struct SocketBench {
    static func main() throws {
        let arguments = CommandLine.arguments
        if arguments.count == 3 && arguments[1] == "echo-server" {
            _ = try EchoServer(path: arguments[2])
            while true { sleep(60) }
        }
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

        // SOCKET_BENCH_SECTIONS=latency (or throughput) runs one part alone,
        // for profiling the daemon under one kind of load.
        let sections = ProcessInfo.processInfo.environment["SOCKET_BENCH_SECTIONS"] ?? "throughput,latency"
        if sections.contains("throughput") {
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
        }
        guard sections.contains("latency") else { return }

        // The floor: the same request/reply exchange with an echo server that
        // does nothing (thread per connection, recv a request, send 4 KiB + a
        // header), in a process of its own like the daemon (a switch between
        // processes costs more than one between threads), interleaved with
        // the daemon's rounds.
        let echoPath = NSTemporaryDirectory() + "socket-bench-echo-\(getpid()).sock"
        let server = Process()
        server.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
        server.arguments = ["echo-server", echoPath]
        try server.run()
        defer {
            kill(server.processIdentifier, SIGKILL)
            unlink(echoPath)
        }
        var echo: EchoServer.Client?
        for _ in 0..<100 where echo == nil {
            echo = try? EchoServer.Client(path: echoPath)
            if echo == nil { usleep(20_000) }
        }
        guard echo != nil else { throw EchoServer.EchoError.connect }
        // The server's own CPU per request (its process's user + system time
        // over the round, from /proc): steadier than a p99 on a busy machine,
        // and what the daemon adds to a socket round trip. The daemon's pid
        // comes from the socket itself (SO_PEERCRED).
        let probe = try UnixSocket.connect(path: socket)
        let daemonPID = try probe.peerCredentials().pid
        probe.close()
        let echoPID = server.processIdentifier
        print("| 4 KiB random reads | clients | p50 µs | p99 µs | p99 min-max | reads/s | p99 / echo floor p99 | server CPU µs per request |")
        print("|---|---|---|---|---|---|---|---|")
        for clients in [1, 8] {
            var daemonRuns: [[Double]] = []
            var echoRuns: [[Double]] = []
            var daemonCPU: [Double] = []
            var echoCPU: [Double] = []
            for _ in 0..<rounds {
                var before = cpuSeconds(daemonPID)
                daemonRuns.append(try latencies(clients: clients) { client in
                    let connection = try DaemonClient(path: socket, name: "latency")
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
                    var rng = SystemRandomNumberGenerator()
                    return {
                        let offset = UInt64(Int.random(in: 0..<(size - 4096), using: &rng))
                        _ = try connection.read(model, path: path, offset: offset, into: buffer)
                    }
                })
                daemonCPU.append((cpuSeconds(daemonPID) - before) * 1e6 / Double(max(1, daemonRuns.last!.count)))
                before = cpuSeconds(echoPID)
                echoRuns.append(try latencies(clients: clients) { _ in try EchoServer.Client(path: echoPath).request })
                echoCPU.append((cpuSeconds(echoPID) - before) * 1e6 / Double(max(1, echoRuns.last!.count)))
            }
            let floor = median(echoRuns.map { percentile($0, 0.99) })
            for (name, runs, cpu) in [("daemon read", daemonRuns, daemonCPU), ("echo floor", echoRuns, echoCPU)] {
                let p50 = runs.map { percentile($0, 0.50) }
                let p99 = runs.map { percentile($0, 0.99) }
                let rate = Double(runs.map(\.count).reduce(0, +)) / Double(rounds)
                print(String(format: "| %@ | %d | %.1f | %.1f | %.1f-%.1f | %.0f | %.2f | %.1f |",
                    name, clients, median(p50), median(p99), p99.min()!, p99.max()!, rate, median(p99) / floor, median(cpu)))
            }
        }
    }

    /// User + system CPU seconds process `pid` has used so far (/proc/PID/stat).
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return 0 }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Each of `clients` threads makes a request function and calls it for a
    /// second; every latency in µs.
    static func latencies(clients: Int, _ make: @escaping @Sendable (Int) throws -> () throws -> Void) throws -> [Double] {
        let samples = Samples()
        let group = DispatchGroup()
        let stop = ContinuousClock.now + .seconds(1)
        for index in 0..<clients {
            group.enter()
            Thread {
                defer { group.leave() }
                guard let request = try? make(index) else { return }
                var local: [Double] = []
                local.reserveCapacity(100_000)
                while ContinuousClock.now < stop {
                    let start = ContinuousClock.now
                    guard (try? request()) != nil else { return }
                    local.append(seconds(since: start) * 1e6)
                }
                samples.add(local)
            }.start()
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
    // NaN for no values (a round where every request failed or the server
    // stalled for the whole second), instead of a crash that hides the rest.
    static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return .nan }
        let s = values.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
    static func percentile(_ values: [Double], _ p: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        let s = values.sorted()
        return s[min(s.count - 1, Int(Double(s.count) * p))]
    }
    @inline(never) static func blackHole(_ value: UInt64) { if value == 1 { print("") } }
}

/// A server that answers every request with 4 KiB and a 12-byte header and
/// does nothing else: the cost of the socket round trip itself.
final class EchoServer: @unchecked Sendable {
    let path: String
    let listener: Int32
    private var running = true

    init(path: String) throws {
        self.path = path
        unlink(path)
        listener = try UnixSocket.listen(path: path, mode: 0o600, group: nil, backlog: 64).descriptor
        Thread { [self] in
            while running {
                let fd = accept(listener, nil, nil)
                guard fd >= 0 else { continue }
                Thread {
                    var request = [UInt8](repeating: 0, count: 4096)
                    let reply = [UInt8](repeating: 7, count: 4096 + 12)
                    while recv(fd, &request, request.count, 0) > 0 {
                        if send(fd, reply, reply.count, Int32(MSG_NOSIGNAL)) < 0 { break }
                    }
                    close(fd)
                }.start()
            }
        }.start()
    }

    /// A connection and its request function (64 bytes out, 4 KiB + 12 back).
    struct Client {
        let request: () throws -> Void

        init(path: String) throws {
            // The same socket calls the daemon's own clients use (UnixSocket).
            let fd = try UnixSocket.connect(path: path).descriptor
            let message = [UInt8](repeating: 1, count: 64)
            var reply = [UInt8](repeating: 0, count: 4096 + 12)
            request = {
                guard send(fd, message, message.count, Int32(MSG_NOSIGNAL)) == message.count else { throw EchoError.io }
                var got = 0
                while got < reply.count {
                    let n = reply.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + got, $0.count - got, 0) }
                    guard n > 0 else { throw EchoError.io }
                    got += n
                }
            }
        }
    }

    func stop() {
        running = false
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        unlink(path)
    }

    enum EchoError: Error { case connect, io }
}
