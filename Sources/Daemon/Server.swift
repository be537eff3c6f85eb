import BlockCache
import Foundation
import Logging
import UnixSocket
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// The limits a server keeps (docs/protocol.md, "Limits").
public struct ServerLimits: Sendable, Equatable {
    public var maxRequestFrame: Int
    public var maxReadLength: Int
    public var maxInFlight: Int
    public var maxConnections: Int
    public var idleTimeout: Duration
    public var drainTimeout: Duration

    public init(
        maxRequestFrame: Int = 64 << 10, maxReadLength: Int = 8 << 20, maxInFlight: Int = 32, maxConnections: Int = 256,
        idleTimeout: Duration = .seconds(300), drainTimeout: Duration = .seconds(10)
    ) {
        self.maxRequestFrame = maxRequestFrame
        self.maxReadLength = maxReadLength
        self.maxInFlight = maxInFlight
        self.maxConnections = maxConnections
        self.idleTimeout = idleTimeout
        self.drainTimeout = drainTimeout
    }
}

/// The socket server: one thread accepts, one thread per connection reads
/// and answers (long or pipelined requests go to a worker queue). Blocking
/// threads rather than an event loop because every request ends in blocking
/// work (pread, a wait for a block) and because descriptors must be passed
/// with sendmsg, which SwiftNIO cannot do.
public final class Server: @unchecked Sendable {
    let node: Node
    let path: String
    let mode: mode_t
    let group: gid_t?
    let limits: ServerLimits
    let access: AccessPolicy
    let logger: Logger
    /// Pipelined requests and preloads (see `BlockingThreads`: not Dispatch).
    let workers = BlockingThreads(width: 256, name: "weightcache.worker")

    // Guarded by `lock`.
    private let lock = NSCondition()
    private var listener: UnixSocket?
    private var connections: [Int: Connection] = [:]
    private var nextID = 1
    private var stopping = false
    private var acceptorDone = false
    private(set) var connectionCounts = ConnectionCounts()
    /// Counts of connections that have closed (live ones keep their own).
    private var retiredCounts = RequestCounts()

    public init(node: Node, path: String, mode: mode_t, group: gid_t?, limits: ServerLimits, access: AccessPolicy, logger: Logger) {
        self.node = node
        self.path = path
        self.mode = mode
        self.group = group
        self.limits = limits
        self.access = access
        self.logger = logger
    }

    /// Listens and starts accepting on a thread of its own.
    public func start() throws(SocketError) {
        let socket = try UnixSocket.listen(path: path, mode: mode, group: group)
        lock.withLock { listener = socket }
        let thread = Thread { [self] in acceptLoop(socket) }
        thread.name = "weightcache-accept"
        thread.start()
        logger.info("listening on \(path) (mode 0\(String(mode, radix: 8)))")
    }

    /// Stops accepting, removes the socket, lets every connection finish what
    /// it is doing (up to the drain timeout), then closes them.
    public func drain() {
        lock.lock()
        stopping = true
        let open = Array(connections.values)
        lock.unlock()
        node.beginDraining()
        for connection in open { connection.stopReading() }
        let deadline = Date().addingTimeInterval(limits.drainTimeout.seconds)
        lock.lock()
        while !(acceptorDone && connections.isEmpty) && lock.wait(until: deadline) {}
        let left = connections.count
        lock.unlock()
        unlink(path)
        let cut = left > 0 ? ", \(left) connection(s) cut at the drain timeout" : ""
        logger.info("drained: socket \(path) removed\(cut)")
    }

    private func acceptLoop(_ listener: UnixSocket) {
        while !lock.withLock({ stopping }) {
            do {
                guard let client = try listener.accept(timeoutMilliseconds: 200) else { continue }
                admit(client)
            } catch {
                logger.error("accept failed: \(error)")
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
        listener.close()
        lock.withLock {
            acceptorDone = true
            lock.broadcast()
        }
    }

    private func admit(_ socket: UnixSocket) {
        lock.lock()
        guard connections.count < limits.maxConnections, !stopping else {
            connectionCounts.rejected += 1
            lock.unlock()
            let reply = Response.error(.busy, "too many connections (limit \(limits.maxConnections))").frame(request: 0)
            socket.setSendTimeout(seconds: 1)
            try? socket.send(reply.encoded)
            socket.close()
            return
        }
        let id = nextID
        nextID += 1
        let connection = Connection(id: id, socket: socket, server: self)
        connections[id] = connection
        connectionCounts.accepted += 1
        connectionCounts.open = connections.count
        lock.unlock()
        let thread = Thread { [self] in
            connection.run()
            let final = connection.requestCounts
            lock.withLock {
                retiredCounts.add(final)
                connections[id] = nil
                connectionCounts.open = connections.count
                lock.broadcast()
            }
        }
        thread.name = "weightcache-connection-\(id)"
        thread.start()
    }

    /// Request counts over every connection, closed and open.
    private func counts() -> (ConnectionCounts, RequestCounts) {
        lock.lock()
        let opened = connectionCounts
        var requests = retiredCounts
        let live = Array(connections.values)
        lock.unlock()
        for connection in live { requests.add(connection.requestCounts) }
        return (opened, requests)
    }

    func statistics() -> String {
        let (connections, requests) = counts()
        return node.statistics(connections: connections, requests: requests)
    }

    /// The node's and the server's figures, for the metrics endpoint.
    func report() -> StatsReport {
        let (connections, requests) = counts()
        return node.report(connections: connections, requests: requests)
    }
}
