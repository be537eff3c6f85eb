// The daemon's limits (docs/protocol.md, "Limits"): connections, requests in
// flight, idle time, frame size; and clients that vanish mid-reply.
import Foundation
import UnixSocket
import WeightCacheClient
import Wire
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class DaemonLimitsTests: XCTestCase {
    func testConnectionInFlightIdleAndVanishingClients() async throws {
        let daemon = try await DaemonHarness(tag: "limits", settings: [
            "WEIGHTCACHE_DAEMON_MAX_CONNECTIONS": "4", "WEIGHTCACHE_DAEMON_MAX_IN_FLIGHT": "2",
            "WEIGHTCACHE_DAEMON_IDLE_TIMEOUT_SECONDS": "1", "WEIGHTCACHE_DAEMON_MAX_REQUEST_FRAME_BYTES": "1KiB",
        ])
        let folder = try daemon.pushModel("lim@main", bigMiB: 16, shards: 1, seed: 31)
        try daemon.start()
        _ = try daemon.client().preload("lim@main")
        let shard = "model-00001-of-00001.safetensors"
        usleep(1_500_000)  // the preload's connection idles out
        let baselineFDs = daemon.descriptorCount()
        let baselineRSS = residentKiB(daemon.pid)

        // Connections: four are admitted, the fifth is told `busy` and closed.
        var open: [DaemonClient] = []
        for _ in 0..<4 { open.append(try daemon.client()) }
        XCTAssertThrowsError(try daemon.client()) { XCTAssertEqual(code($0), .busy, "\($0)") }
        open.removeAll()
        try waitUntilNoOtherConnections(daemon)

        // Idle: a greeted connection that says nothing is closed after about a second.
        let idle = try UnixSocket.connect(path: daemon.socket)
        defer { idle.close() }
        try idle.send(Request.hello(Hello(client: "idle")).frame(request: 1).encoded)
        let started = ContinuousClock.now
        var buffer = [UInt8](repeating: 0, count: 4096)
        var received = 0
        while true {
            guard try idle.poll(events: Int16(POLLIN), timeoutMilliseconds: 5000) else { return XCTFail("idle connection never closed") }
            let n = try buffer.withUnsafeMutableBytes { try idle.receive(into: $0) }
            if n == 0 { break }
            received += n
        }
        XCTAssertGreaterThan(received, 0, "no hello-ok")
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(4))

        // In flight: ten pipelined 4 MiB reads on one connection; beyond two
        // unanswered the daemon answers `busy` at once, and every other reply is right.
        try waitUntilNoOtherConnections(daemon)
        let socket = try UnixSocket.connect(path: daemon.socket)
        var stream = Request.hello(Hello(client: "pipeline")).frame(request: 1).encoded
        for i in 0..<10 { stream += Request.read(model: "lim@main", path: shard, offset: UInt64(i) << 20, length: 4 << 20).frame(request: UInt32(100 + i)).encoded }
        try socket.send(stream)
        let replies = try readFrames(socket, count: 11)
        let expected = try Array(Data(contentsOf: URL(fileURLWithPath: folder + "/" + shard)))
        var busy = 0
        var data = 0
        for frame in replies.dropFirst() {
            switch try Response(decoding: frame) {
            case .error(.busy, _): busy += 1
            case .data(let bytes):
                let offset = Int(frame.request - 100) << 20
                XCTAssertTrue(bytes == Array(expected[offset..<offset + (4 << 20)]), "wrong bytes for request \(frame.request)")
                data += 1
            case let other: XCTFail("unexpected \(other)")
            }
        }
        XCTAssertEqual(busy + data, 10)
        XCTAssertGreaterThanOrEqual(data, 2)
        socket.close()

        // Frame size: a request over 1 KiB is malformed and the connection closed.
        try waitUntilNoOtherConnections(daemon)
        let big = try UnixSocket.connect(path: daemon.socket)
        try big.send(Request.hello(Hello(client: "big")).frame(request: 1).encoded + Request.resolve(model: String(repeating: "a", count: 2000)).frame(request: 2).encoded)
        let bigReplies = try readFrames(big, count: 2)
        guard case .error(.malformed, _) = try Response(decoding: bigReplies[1]) else { return XCTFail("\(bigReplies[1])") }
        big.close()

        // Clients that ask for 8 MiB and vanish without reading, fifty times.
        for _ in 0..<50 {
            let gone = try UnixSocket.connect(path: daemon.socket)
            try? gone.send(Request.hello(Hello(client: "gone")).frame(request: 1).encoded
                + Request.read(model: "lim@main", path: shard, offset: 0, length: 8 << 20).frame(request: 2).encoded)
            gone.close()
        }
        // Still serving (once the vanished clients' connections are closed, which
        // frees their slots under the limit of 4), and back to its descriptors
        // and (about) its memory.
        var client: DaemonClient?
        let admitted = ContinuousClock.now + .seconds(10)
        while client == nil && ContinuousClock.now < admitted {
            client = try? daemon.client()
            if client == nil { usleep(100_000) }
        }
        XCTAssertTrue(try XCTUnwrap(client).read("lim@main", path: shard, offset: 0, length: expected.count) == expected)
        client = nil
        let deadline = ContinuousClock.now + .seconds(10)
        while daemon.descriptorCount() > baselineFDs && ContinuousClock.now < deadline { usleep(100_000) }
        XCTAssertLessThanOrEqual(daemon.descriptorCount(), baselineFDs, "descriptors leaked")
        XCTAssertLessThan(residentKiB(daemon.pid), baselineRSS + 64 << 10, "RSS grew by more than 64 MiB")
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// Connection slots free up when a closed connection's thread ends, a
    /// moment after the client closes: wait until only the asking one is open.
    func waitUntilNoOtherConnections(_ daemon: DaemonHarness) throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if let client = try? daemon.client(), let json = try? client.stats(),
                let stats = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
                let connections = stats["connections"] as? [String: Any], connections["open"] as? Int == 1
            {
                return
            }
            usleep(50_000)
        }
        XCTFail("connections did not close")
    }

    func residentKiB(_ pid: Int32) -> Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return -1 }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? -1
    }
}
