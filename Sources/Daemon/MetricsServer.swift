import Foundation
import Logging
import Prometheus
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// `GET /metrics` over plain HTTP/1.1 on `metrics.address` (keep it on
/// loopback: a node agent scrapes it). One thread, one request per
/// connection, bounded reads: a scrape every few seconds needs no more, and
/// nothing here can be driven to hold memory or threads.
public struct MetricsService: Service {
    let address: String
    let server: Server
    let metrics: DaemonMetrics
    let logger: Logger

    public init(address: String, server: Server, registry: PrometheusRegistryBox, logger: Logger) {
        self.address = address
        self.server = server
        self.metrics = DaemonMetrics(registry: registry.registry)
        self.logger = logger
    }

    public func run() async throws {
        let listener = try Self.listen(address)
        logger.info("metrics on http://\(address)/metrics")
        let stop = StopFlag()
        let metrics = self.metrics
        let server = self.server
        let logger = self.logger
        let thread = Thread {
            while !stop.isSet {
                var entry = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
                guard poll(&entry, 1, 200) > 0 else { continue }
                let client = accept(listener, nil, nil)
                guard client >= 0 else { continue }
                Self.answer(client, metrics: metrics, server: server, logger: logger)
                close(client)
            }
            close(listener)
        }
        thread.start()
        try? await gracefulShutdown()
        stop.set()
    }

    static func answer(_ client: Int32, metrics: DaemonMetrics, server: Server, logger: Logger) {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var request: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        while request.count < 8192 && !request.suffix(4).elementsEqual([13, 10, 13, 10]) {
            let n = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return }
            request += buffer[0..<n]
        }
        let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self).split(separator: " ")
        let status: String
        var body: [UInt8]
        var type = "text/plain; charset=utf-8"
        if line.count >= 2 && line[0] == "GET" && (line[1] == "/metrics" || line[1].hasPrefix("/metrics?")) {
            metrics.update(from: server.report())
            body = metrics.exposition()
            status = "200 OK"
            type = "text/plain; version=0.0.4; charset=utf-8"
        } else {
            status = line.count >= 2 && line[0] != "GET" ? "405 Method Not Allowed" : "404 Not Found"
            body = Array("only GET /metrics here\n".utf8)
        }
        let head = "HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        body.insert(contentsOf: Array(head.utf8), at: 0)
        var sent = 0
        while sent < body.count {
            let n = body.withUnsafeBytes { send(client, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return }
            sent += n
        }
    }

    /// A listening TCP socket on HOST:PORT (the first address HOST resolves to).
    static func listen(_ address: String) throws -> Int32 {
        guard let colon = address.lastIndex(of: ":") else { throw DaemonError.invalidArgument("metrics.address \(address): expected HOST:PORT") }
        let host = String(address[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        let port = String(address[address.index(after: colon)...])
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, port, &hints, &result) == 0, let info = result else {
            throw DaemonError.invalidArgument("metrics.address \(address): cannot resolve \(host)")
        }
        defer { freeaddrinfo(result) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw DaemonError.internal("socket for metrics: errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0, Glibc.listen(fd, 16) == 0 else {
            let e = errno
            close(fd)
            throw DaemonError.invalidArgument("metrics.address \(address): bind failed: \(String(cString: strerror(e)))")
        }
        return fd
    }
}

/// The registry, passed from `main` (which also bootstraps swift-metrics
/// with it, so the S3 client's histograms land in the same exposition).
public struct PrometheusRegistryBox: Sendable {
    public let registry: PrometheusCollectorRegistry
    public init(_ registry: PrometheusCollectorRegistry) { self.registry = registry }
}

final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}
