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
    private var decoder = FrameDecoder(maxFrameSize: 512 << 20)
    private var descriptors: [Int32] = []
    private var nextRequest: UInt32 = 1
    private var buffer = [UInt8](repeating: 0, count: 1 << 20)

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

    /// Bytes of a file; ranges longer than the daemon's read limit are split.
    public func read(_ model: String, path: String, offset: UInt64, length: Int) throws(ClientError) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(length)
        let step = max(1, Int(hello.maxReadLength))
        while bytes.count < length {
            let chunk = UInt32(min(step, length - bytes.count))
            guard case .data(let data) = try exchange(.read(model: model, path: path, offset: offset + UInt64(bytes.count), length: chunk))
            else { throw unexpected("data") }
            bytes += data
            if data.count < Int(chunk) { break }  // the end of the file
        }
        return bytes
    }

    /// A read-only descriptor of the staged file (the caller closes it).
    public func open(_ model: String, path: String) throws(ClientError) -> (descriptor: Int32, info: FileInfo) {
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
        let id = nextRequest
        nextRequest &+= 1
        do { try socket.send(request.frame(request: id).encoded) } catch { throw .socket(error) }
        while true {
            let frame = try nextFrame()
            let reply: Response
            do { reply = try Response(decoding: frame) } catch { throw .protocolViolation("\(error)") }
            if case .error(let code, let message) = reply, frame.request == id || frame.request == 0 {
                throw .daemon(code, message)
            }
            guard frame.request == id else { throw .protocolViolation("reply to request \(frame.request), expected \(id)") }
            if reply.isFinal { return reply }
            interim(reply)
        }
    }

    private func nextFrame() throws(ClientError) -> Frame {
        while true {
            do {
                if let frame = try decoder.next() { return frame }
            } catch { throw .protocolViolation("\(error)") }
            var count = 0
            var failure: SocketError?
            buffer.withUnsafeMutableBytes { raw in
                do throws(SocketError) { count = try socket.receive(into: raw, descriptors: &descriptors) } catch { failure = error }
            }
            if let failure { throw .socket(failure) }
            guard count > 0 else { throw .socket(.closed) }
            decoder.append(buffer[0..<count])
        }
    }
}
