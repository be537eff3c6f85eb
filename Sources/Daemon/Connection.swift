import Foundation
import Logging
import Synchronization
import UnixSocket
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// One client: reads frames, checks each request (hello first, access,
/// in-flight limit), runs it and writes the reply. Replies are written under
/// one lock, whole frames at a time, so pipelined replies never interleave.
/// Requests run on the reading thread when nothing else is queued (the
/// fastest path for a client waiting on each read) and on the worker queue
/// when the client pipelines or the request is long (preload).
final class Connection: @unchecked Sendable {
    let id: Int
    let socket: UnixSocket
    unowned let server: Server
    /// What every request uses, held here: each `server.` access through the
    /// unowned reference costs a checked retain (`swift_unownedRetainStrong`),
    /// about 1% of the daemon's CPU under small reads. The node outlives
    /// every connection (the server waits for them before it stops).
    private let node: Node
    private let limits: ServerLimits
    private var logger: Logger

    // Guarded by `state`.
    private let state = NSCondition()
    private var inFlight = 0
    private var stopping = false
    /// Set when a reply could not be written: the client is gone.
    private var broken = false
    private let writeLock = NSLock()
    /// This connection's request counters: its own lock, so connections never
    /// contend on a shared one per request; the server sums them for stats.
    private let tally = Mutex(RequestTally())

    init(id: Int, socket: UnixSocket, server: Server) {
        self.id = id
        self.socket = socket
        self.server = server
        node = server.node
        limits = server.limits
        logger = server.logger
        logger[metadataKey: "connection"] = "\(id)"
    }

    private func count(_ update: (inout RequestTally) -> Void) { tally.withLock { update(&$0) } }
    var requestCounts: RequestCounts {
        var counts = tally.withLock { $0.named }
        state.lock()
        counts.inFlight = inFlight  // kept once, where the limit is enforced
        state.unlock()
        return counts
    }

    /// Asks the reading loop to stop taking requests (drain).
    func stopReading() {
        state.lock()
        stopping = true
        state.unlock()
        socket.shutdownReading()
    }

    // The per-request checks of `state` lock and unlock by hand: Foundation's
    // `withLock` is generic and not inlinable, and its unspecialized call
    // (metadata lookups, value witnesses) cost more than the lock itself.
    private var isStopping: Bool {
        state.lock()
        defer { state.unlock() }
        return stopping || broken
    }

    private var isBroken: Bool {
        state.lock()
        defer { state.unlock() }
        return broken
    }

    func run() {
        defer { finish() }
        let peer: PeerCredentials
        do { peer = try socket.peerCredentials() } catch {
            logger.warning("no peer credentials: \(error)")
            return
        }
        logger[metadataKey: "peer"] = "uid=\(peer.uid) pid=\(peer.pid)"
        let grants = server.access.grants(for: peer)
        socket.setSendTimeout(seconds: 30)
        socket.setSendBuffer(bytes: 4 << 20)
        var decoder = FrameDecoder(maxFrameSize: limits.maxRequestFrame)
        var greeted = false
        var lastActivity = ContinuousClock.now
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        // A blocking recv (one syscall per request, no poll before it) that
        // wakes every second to check the idle time and the drain flag.
        socket.setReceiveTimeout(seconds: 1)
        while !isStopping {
            let count: Int
            do { count = try buffer.withUnsafeMutableBytes { try socket.receive(into: $0) } } catch {
                guard (error as? SocketError) == .timedOut else { return }
                state.lock()
                let idle = inFlight == 0
                state.unlock()
                if idle && ContinuousClock.now - lastActivity > limits.idleTimeout {
                    logger.debug("closing idle connection")
                    return
                }
                continue
            }
            guard count > 0 else { return }  // the client closed (or drain shut reading)
            lastActivity = .now
            buffer.withUnsafeBytes { decoder.append(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            do {
                while let frame = try decoder.next() {
                    guard handle(frame, peer: peer, grants: grants, greeted: &greeted, more: decoder.buffered >= Frame.headerSize) else { return }
                }
            } catch {
                send(.error(.malformed, "\(error)"), request: 0)
                return
            }
        }
    }

    /// Handles one frame; false when the connection must close.
    private func handle(
        _ frame: Frame, peer: PeerCredentials, grants: AccessPolicy.Grants, greeted: inout Bool, more: Bool
    ) -> Bool {
        let request: Request
        do { request = try Request(decoding: frame) } catch {
            if case .unknownType(let type, let id) = error, greeted {
                send(.error(.unknownOperation, "unknown request type \(type)"), request: id)
                return true
            }
            send(.error(.malformed, "\(error)"), request: frame.request)
            return false
        }
        guard greeted else {
            guard case .hello(let hello) = request else {
                send(.error(.helloRequired, "the first request must be hello"), request: frame.request)
                return false
            }
            guard hello.magic == protocolMagic, hello.minVersion <= protocolVersion, protocolVersion <= hello.maxVersion else {
                send(.error(.unsupportedVersion, "this daemon speaks version \(protocolVersion) of \(protocolMagic)"), request: frame.request)
                return false
            }
            greeted = true
            send(.helloOK(HelloOK(
                version: protocolVersion, server: "weightcache \(daemonVersion)",
                maxRequestFrame: UInt32(limits.maxRequestFrame), maxReadLength: UInt32(limits.maxReadLength),
                maxInFlight: UInt16(min(limits.maxInFlight, Int(UInt16.max))),
                blockSize: UInt32(node.cache.blockSize))), request: frame.request)
            return true
        }
        let type = request.type
        guard grants.allows(admin: request.needsAdmin) else {
            count {
                $0.received(type)
                $0.counts.denied += 1
            }
            send(.error(.permissionDenied, "uid \(peer.uid) may not \(request.needsAdmin ? "administer" : "read") (see access.* in the configuration)"), request: frame.request)
            return true
        }
        state.lock()
        let admitted = inFlight < limits.maxInFlight
        if admitted { inFlight += 1 }
        // Other requests in flight or already behind this one: the client
        // pipelines, and is its own read-ahead (see `BlockCache`).
        let pipelined = inFlight > 1 || more
        state.unlock()
        count { $0.received(type) }
        guard admitted else {
            send(.error(.busy, "more than \(limits.maxInFlight) requests in flight on this connection"), request: frame.request)
            return true
        }
        if case .preload = request {
            server.workers.async { self.perform(request, id: frame.request, inline: false, pipelined: pipelined) }
        } else if more {
            server.workers.async { self.perform(request, id: frame.request, inline: false, pipelined: pipelined) }
        } else {
            perform(request, id: frame.request, inline: true, pipelined: pipelined)
        }
        return true
    }

    /// A request as it runs: what its replies carry and what decides how it
    /// is served, passed down as one value.
    private struct Running {
        /// The request id its replies carry (not the connection's `id`).
        let request: UInt32
        /// On the reading thread, which may use its own cache (`lastTarget`).
        let inline: Bool
        /// The client had other requests in flight when this one came: it is
        /// its own read-ahead (see `BlockCache`).
        let pipelined: Bool
        /// Its place in the in-flight count, given back as its final reply starts.
        let ticket: InFlightTicket
    }

    /// Runs a request and writes its reply (or error).
    private func perform(_ request: Request, id: UInt32, inline: Bool, pipelined: Bool) {
        let ticket = InFlightTicket(self)
        defer { ticket.settle() }
        run(request, Running(request: id, inline: inline, pipelined: pipelined, ticket: ticket))
    }

    private func reply(_ response: Response, to running: Running, passing descriptor: Int32? = nil) {
        send(response, request: running.request, ticket: running.ticket, passing: descriptor)
    }

    /// Gives a request's place in the in-flight count back (`InFlightTicket`).
    fileprivate func settled() {
        state.lock()
        inFlight -= 1
        state.broadcast()
        state.unlock()
    }

    private func run(_ request: Request, _ running: Running) {
        do throws(DaemonError) {
            switch request {
            case .hello: reply(.error(.invalidArgument, "hello was already sent"), to: running)
            case .resolve(let model): reply(.model(node.modelInfo(try node.resolve(try Node.reference(model)))), to: running)
            case .stat(let model, let path):
                let resolved = try node.resolve(try Node.reference(model))
                reply(.file(node.info(try node.file(path, of: resolved))), to: running)
            case .list: reply(.models(node.summaries()), to: running)
            case .read(let model, let path, let offset, let length):
                try read(model, path, offset, length, running)
            case .open(let model, let path):
                let opened = try node.open(model: model, path: path)
                defer { close(opened.descriptor) }
                reply(.opened(opened.info), to: running, passing: opened.descriptor)
            case .preload(let model, let tier, let pin):
                let info = try node.preload(model: model, tier: tier, pin: pin) { done, total in
                    reply(.progress(done: done, total: total), to: running)
                }
                reply(.model(info), to: running)
            case .pin(let model):
                try node.pin(model: model)
                reply(.ok("pinned \(model)"), to: running)
            case .unpin(let model):
                try node.unpin(model: model)
                reply(.ok("unpinned \(model)"), to: running)
            case .evict(let model, let tier): reply(.ok(try node.evict(model: model, tier: tier)), to: running)
            case .stats: reply(.stats(json: server.statistics()), to: running)
            }
        } catch {
            count {
                $0.counts.errors += 1
                $0.counts.errorsByCode[error.code.description, default: 0] += 1
            }
            logger.debug("request \(running.request) failed: \(error)")
            reply(.error(error.code, error.description), to: running)
        }
    }

    /// Every read is sent straight from the RAM arena, no copy in the daemon:
    /// the header with the first block's bytes in one gathered send, then the
    /// next blocks' bytes. If a later block fails after the reply has started,
    /// the frame cannot be finished and the connection is closed (a client
    /// treats that as the end of its requests); a failure before the first
    /// byte is an error reply.
    private func read(
        _ model: String, _ path: String, _ offset: UInt64, _ length: UInt32, _ running: Running
    ) throws(DaemonError) {
        guard Int(length) <= limits.maxReadLength else {
            throw .invalidArgument("read length \(length) is over the limit of \(limits.maxReadLength) bytes")
        }
        let plan = try target(model, path, inline: running.inline).plan(offset: offset, length: UInt64(length), path: path)
        let header = Frame.header(type: MessageType.data.rawValue, request: running.request, payloadLength: plan.range.count)
        if plan.range.isEmpty {
            running.ticket.settle()
            write(header, passing: nil)
        } else if let failure = stream(plan, header: header, model: model, path: path, running) {
            throw failure
        }
        let bytes = UInt64(plan.range.count)
        count {
            $0.counts.read += 1
            $0.counts.readBytes += bytes
        }
    }

    /// Sends a read's frame from the arena. Returns the error to reply with
    /// when it failed before the first byte went out. `Node.forEachBlock` has
    /// every block of the read loaded (from NVMe or the store, checked) before
    /// it hands over the first, and the write lock is taken only then:
    /// pipelined reads of one connection fetch in parallel and only their
    /// sending is serialised.
    private func stream(
        _ plan: ReadPlan, header: [UInt8], model: String, path: String, _ running: Running
    ) -> DaemonError? {
        var locked = false
        defer { if locked { writeLock.unlock() } }
        var started = false
        var delivered = true
        do throws(DaemonError) {
            // `reader: id`: read-ahead follows each connection's reads as one stream.
            try node.forEachBlock(plan, model: model, path: path, reader: id, pipelined: running.pipelined) { piece in
                if !locked {
                    writeLock.lock()
                    locked = true
                    guard !isBroken else { return false }  // the client is gone: nothing to send
                    running.ticket.settle()
                }
                do throws(SocketError) {
                    if started {
                        try socket.send(piece)
                    } else {
                        var failure: SocketError?
                        header.withUnsafeBytes { head in
                            do throws(SocketError) { try socket.send(head, piece) } catch { failure = error }
                        }
                        if let failure { throw failure }
                    }
                    started = true
                    return true
                } catch {
                    delivered = false
                    return false
                }
            }
        } catch {
            guard started else { return error }
            logger.warning("read of \(model) \(path) failed mid-reply, closing the connection: \(error)")
            delivered = false
        }
        if !delivered { markBroken() }
        return nil
    }

    /// The last read's target, kept by the reading thread: a client reading
    /// one file over and over skips the lookups (model, file, source) until
    /// the node changes anything or a second passes (resolutions refresh).
    private var lastTarget: KeptTarget?

    /// A class, so checking it costs one reference count, not one per field.
    private final class KeptTarget {
        let model: String
        let path: String
        let generation: Int
        let at: ContinuousClock.Instant
        let target: ReadTarget

        init(model: String, path: String, generation: Int, at: ContinuousClock.Instant, target: ReadTarget) {
            (self.model, self.path, self.generation, self.at, self.target) = (model, path, generation, at, target)
        }

        func serves(_ model: String, _ path: String, generation: Int) -> Bool {
            self.generation == generation && self.model == model && self.path == path && ContinuousClock.now - at < .seconds(1)
        }
    }

    private func target(_ model: String, _ path: String, inline: Bool) throws(DaemonError) -> ReadTarget {
        guard inline else { return try node.target(model: model, path: path) }
        let generation = node.generation.load(ordering: .acquiring)
        if let last = lastTarget, last.serves(model, path, generation: generation) { return last.target }
        let target = try node.target(model: model, path: path)
        // Only a staged file's target is kept: a file still read through
        // from the store is looked up again on every read, so that the first
        // read after its pull lands comes from NVMe (and sees its blob, damage
        // included), not from the store until the next change is noticed.
        lastTarget = target.source.path == nil ? nil : KeptTarget(model: model, path: path, generation: generation, at: .now, target: target)
        return target
    }

    /// `ticket`: the request's place in the in-flight count, given back as
    /// its final reply goes out (none for replies to refused requests).
    private func send(_ response: Response, request: UInt32, ticket: InFlightTicket? = nil, passing descriptor: Int32? = nil) {
        if response.isFinal { ticket?.settle() }
        write(response.frame(request: request).encoded, passing: descriptor)
    }

    private func write(_ bytes: [UInt8], passing descriptor: Int32?) {
        if let descriptor {
            deliver { () throws(SocketError) in try socket.send(bytes, passing: descriptor) }
        } else {
            bytes.withUnsafeBytes { raw in deliver { () throws(SocketError) in try socket.send(raw) } }
        }
    }

    /// Sends one whole frame under the write lock; a failure marks the
    /// connection broken (the client is gone) and wakes the reading loop.
    private func deliver(_ send: () throws(SocketError) -> Void) {
        writeLock.lock()
        defer { writeLock.unlock() }
        guard !isBroken else { return }
        do {
            try send()
        } catch {
            logger.debug("reply not delivered: \(error)")
            markBroken()
        }
    }

    /// The client is gone or the stream is out of step: stop reading, let
    /// requests in flight finish without writing, then close.
    private func markBroken() {
        state.lock()
        broken = true
        state.unlock()
        socket.shutdownReading()
    }

    /// Waits for requests still running (their replies use the socket), then closes.
    private func finish() {
        state.lock()
        while inFlight > 0 { state.wait() }
        state.unlock()
        socket.close()
    }
}

/// One request's place in its connection's `maxInFlight` count, given back
/// once: as its final reply starts going out (a client that has its answer
/// may send the next request at once, and must not be told `busy` for it), or
/// when the request ends without a reply.
final class InFlightTicket: Sendable {
    private let connection: Connection
    private let done = Atomic<Bool>(false)

    fileprivate init(_ connection: Connection) { self.connection = connection }

    func settle() {
        if !done.exchange(true, ordering: .acquiringAndReleasing) { connection.settled() }
    }
}

/// A connection's request counters as it keeps them: one slot per request
/// type instead of a dictionary keyed by name (hashing a string per request
/// showed in profiles); `counts` names them for stats.
struct RequestTally {
    var counts = RequestCounts()
    private var byType = [Int](repeating: 0, count: Int(MessageType.allCases.map(\.rawValue).filter { $0 < 0x80 }.max()!) + 1)

    mutating func received(_ type: MessageType) {
        counts.total += 1
        byType[Int(type.rawValue)] += 1
    }

    /// The counts, with `byOperation` filled in from the per-type slots.
    var named: RequestCounts {
        var named = counts
        for type in MessageType.allCases where type.isRequest && byType[Int(type.rawValue)] > 0 {
            named.byOperation[type.name] = byType[Int(type.rawValue)]
        }
        return named
    }
}
