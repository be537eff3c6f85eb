// WeightCacheClient: the Swift client of the daemon's socket protocol
// (docs/protocol.md), used by the CLI. Blocking and sequential: one request
// at a time per client, which is what a command line needs; a process that
// reads from many threads opens one client per thread.
import UnixSocket
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// Every error of the client.
public enum ClientError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The daemon answered with an error.
    case daemon(ErrorCode, String)
    /// The socket failed (no daemon, connection lost).
    case socket(SocketError)
    /// The daemon said something this client cannot parse.
    case protocolViolation(String)

    public var description: String {
        switch self {
        case .daemon(let code, let message): "\(message) [\(code)]"
        case .socket(.system(let call, let path, let errno)) where call == "connect" && (errno == ENOENT || errno == ECONNREFUSED):
            "no daemon listening on \(path): start it with `weightcache serve` (or point socket.path / WEIGHTCACHE_SOCKET_PATH at it)"
        case .socket(let error): "\(error)"
        case .protocolViolation(let text): "protocol violation: \(text)"
        }
    }
}

/// A connection to the daemon, greeted. Not thread-safe.
public final class DaemonClient {
    public private(set) var hello: HelloOK
    private let socket: UnixSocket
    /// Bytes received past the last frame taken (rare: one request at a time).
    private var pending: [UInt8] = []
    private var descriptors: [Int32] = []
    /// Only `open` replies carry a descriptor: other receives skip recvmsg's control buffer.
    private var expectingDescriptor = false
    private var nextRequest: UInt32 = 1
    private var buffer = [UInt8](repeating: 0, count: 256 << 10)
    private static let maxFrameSize = 512 << 20

    /// Connects to the socket at `path` and says hello.
    public init(path: String, name: String = "weightcache-cli") throws(ClientError) {
        do { socket = try UnixSocket.connect(path: path) } catch { throw .socket(error) }
        hello = HelloOK(version: 0, server: "", maxRequestFrame: 0, maxReadLength: 0, maxInFlight: 0, blockSize: 0)
        let reply = try exchange(.hello(Hello(client: name)))
        guard case .helloOK(let ok) = reply else { throw .protocolViolation("expected hello-ok, got \(reply.type)") }
        hello = ok
    }

    deinit {
        for fd in descriptors { close(fd) }
        socket.close()
    }

    public func resolve(_ model: String) throws(ClientError) -> ModelInfo {
        guard case .model(let info) = try exchange(.resolve(model: model)) else { throw unexpected("model") }
        return info
    }

    public func stat(_ model: String, path: String) throws(ClientError) -> FileInfo {
        guard case .file(let info) = try exchange(.stat(model: model, path: path)) else { throw unexpected("file") }
        return info
    }

    public func list() throws(ClientError) -> [ModelSummary] {
        guard case .models(let models) = try exchange(.list) else { throw unexpected("models") }
        return models
    }

    /// Bytes of a file; ranges longer than the daemon's read limit are split,
    /// on block boundaries (`pieceLength`). Fewer than `length` only at the
    /// end of the file.
    public func read(_ model: String, path: String, offset: UInt64, length: Int) throws(ClientError) -> [UInt8] {
        var failure: ClientError?
        let bytes = [UInt8](unsafeUninitializedCapacity: length) { raw, initialized in
            let target = UnsafeMutableRawBufferPointer(raw)
            while initialized < length {
                let chunk = Self.pieceLength(
                    at: offset + UInt64(initialized), remaining: length - initialized,
                    maxReadLength: Int(hello.maxReadLength), blockSize: Int(hello.blockSize))
                do throws(ClientError) {
                    let n = try read(
                        model, path: path, offset: offset + UInt64(initialized),
                        into: UnsafeMutableRawBufferPointer(rebasing: target[initialized..<initialized + chunk]))
                    initialized += n
                    if n < chunk { break }  // the end of the file
                } catch {
                    failure = error
                    break
                }
            }
        }
        if let failure { throw failure }
        return bytes
    }

    /// The length of the next read request at `offset` with `remaining` bytes
    /// to go: at most `maxReadLength`, ending at a multiple (from the start
    /// of the file) of the most whole blocks that fit in it, so that no two
    /// requests need the same block and a cold read-through fetches each
    /// block once (an unaligned 8 MiB request touches three 4 MiB blocks).
    /// When no whole block fits, requests end at multiples of maxReadLength.
    public static func pieceLength(at offset: UInt64, remaining: Int, maxReadLength: Int, blockSize: Int) -> Int {
        let step = max(1, maxReadLength)
        let unit = UInt64(blockSize > 0 && blockSize <= step ? step / blockSize * blockSize : step)
        return min(remaining, Int(unit - offset % unit))
    }

    /// Reads up to `buffer.count` bytes at `offset` straight into `buffer`
    /// (no intermediate copy: the payload is received into it); returns the
    /// bytes read, fewer only at the end of the file. One request per call:
    /// `buffer.count` may not exceed `hello.maxReadLength`.
    public func read(
        _ model: String, path: String, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer
    ) throws(ClientError) -> Int {
        let id = try send(.read(model: model, path: path, offset: offset, length: UInt32(buffer.count)))
        let header = try nextHeader()
        guard header.type == MessageType.data.rawValue, header.request == id else {
            _ = try finalReply(try payload(header), expecting: id) { _ in }
            throw unexpected("data")
        }
        guard header.payloadLength <= buffer.count else { throw .protocolViolation("read reply longer than asked") }
        let early = min(pending.count, header.payloadLength)
        pending.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[0..<early])) }
        pending.removeFirst(early)
        var filled = early
        while filled < header.payloadLength {
            let n = try receive(into: UnsafeMutableRawBufferPointer(rebasing: buffer[filled..<header.payloadLength]))
            filled += n
        }
        return header.payloadLength
    }

    /// A read-only descriptor of the staged file (the caller closes it).
    public func open(_ model: String, path: String) throws(ClientError) -> (descriptor: Int32, info: FileInfo) {
        expectingDescriptor = true
        defer { expectingDescriptor = false }
        guard case .opened(let info) = try exchange(.open(model: model, path: path)) else { throw unexpected("opened") }
        guard !descriptors.isEmpty else { throw .protocolViolation("the opened reply carried no file descriptor") }
        let fd = descriptors.removeFirst()
        for extra in descriptors { close(extra) }
        descriptors.removeAll()
        return (fd, info)
    }

    /// Preloads a model, calling `progress(done, total)` on every progress frame.
    public func preload(
        _ model: String, tier: Tier = .nvme, pin: Bool = false, progress: (UInt64, UInt64) -> Void = { _, _ in }
    ) throws(ClientError) -> ModelInfo {
        let reply = try exchange(.preload(model: model, tier: tier, pin: pin)) { update in
            if case .progress(let done, let total) = update { progress(done, total) }
        }
        guard case .model(let info) = reply else { throw unexpected("model") }
        return info
    }

    public func pin(_ model: String) throws(ClientError) -> String { try ok(.pin(model: model)) }
    public func unpin(_ model: String) throws(ClientError) -> String { try ok(.unpin(model: model)) }
    public func evict(_ model: String, tier: Tier = .nvme) throws(ClientError) -> String { try ok(.evict(model: model, tier: tier)) }

    /// The daemon's statistics, as JSON text.
    public func stats() throws(ClientError) -> String {
        guard case .stats(let json) = try exchange(.stats) else { throw unexpected("stats") }
        return json
    }

    private func ok(_ request: Request) throws(ClientError) -> String {
        guard case .ok(let message) = try exchange(request) else { throw unexpected("ok") }
        return message
    }

    private func unexpected(_ wanted: String) -> ClientError { .protocolViolation("expected a \(wanted) reply") }

    /// Sends a request and returns its final reply (errors thrown), passing
    /// intermediate replies (progress) to `interim`.
    private func exchange(_ request: Request, interim: (Response) -> Void = { _ in }) throws(ClientError) -> Response {
        let id: UInt32
        do { id = try send(request) } catch {
            // A daemon that turns a connection away (`busy`) answers and
            // closes at once, so our first send can fail (EPIPE) before we
            // read why: report its answer, not the broken pipe.
            if let header = try? nextHeader(), let frame = try? payload(header),
                case .error(let code, let message)? = try? Response(decoding: frame) {
                throw .daemon(code, message)
            }
            throw error
        }
        while true {
            let header = try nextHeader()
            if let reply = try finalReply(try payload(header), expecting: id, interim: interim) { return reply }
        }
    }

    private func send(_ request: Request) throws(ClientError) -> UInt32 {
        let id = nextRequest
        nextRequest &+= 1
        do { try socket.send(request.frame(request: id).encoded) } catch { throw .socket(error) }
        return id
    }

    /// The reply if it is final; nil after handing an interim one to `interim`.
    private func finalReply(_ frame: Frame, expecting id: UInt32, interim: (Response) -> Void) throws(ClientError) -> Response? {
        let reply: Response
        do { reply = try Response(decoding: frame) } catch { throw .protocolViolation("\(error)") }
        if case .error(let code, let message) = reply, frame.request == id || frame.request == 0 {
            throw .daemon(code, message)
        }
        guard frame.request == id else { throw .protocolViolation("reply to request \(frame.request), expected \(id)") }
        if reply.isFinal { return reply }
        interim(reply)
        return nil
    }

    private func nextHeader() throws(ClientError) -> Frame.Header {
        try fill(Frame.headerSize)
        let header: Frame.Header
        do { header = try Frame.header(parsing: pending[0..<Frame.headerSize], maxFrameSize: Self.maxFrameSize) } catch {
            throw .protocolViolation("\(error)")
        }
        pending.removeFirst(Frame.headerSize)
        return header
    }

    private func payload(_ header: Frame.Header) throws(ClientError) -> Frame {
        try fill(header.payloadLength)
        let payload = Array(pending[0..<header.payloadLength])
        pending.removeFirst(header.payloadLength)
        return Frame(type: header.type, request: header.request, payload: payload)
    }

    /// Receives until at least `count` bytes are pending.
    private func fill(_ count: Int) throws(ClientError) {
        while pending.count < count {
            var n = 0
            var failure: ClientError?
            buffer.withUnsafeMutableBytes { raw in
                do throws(ClientError) { n = try receive(into: raw) } catch { failure = error }
            }
            if let failure { throw failure }
            pending += buffer[0..<n]
        }
    }

    /// One recv (collecting passed descriptors); the peer closing is an error.
    private func receive(into raw: UnsafeMutableRawBufferPointer) throws(ClientError) -> Int {
        let count: Int
        do {
            count = expectingDescriptor ? try socket.receive(into: raw, descriptors: &descriptors) : try socket.receive(into: raw)
        } catch { throw .socket(error) }
        guard count > 0 else { throw .socket(.closed) }
        return count
    }
}
