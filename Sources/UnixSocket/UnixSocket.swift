// UnixSocket: the daemon's and the client's one door to the kernel for local
// stream sockets: listen (with the stale-socket rule), connect, accept, send
// (with a file descriptor attached), receive (collecting descriptors) and
// peer credentials. Blocking calls on purpose: each connection has a thread,
// and a blocked recv costs nothing while the client thinks. EINTR is retried
// here; every other failure is a `SocketError` naming the call.
import CSocket

#if canImport(Glibc)
import Glibc
#endif

/// Every error of this module.
public enum SocketError: Error, Equatable, Sendable, CustomStringConvertible {
    case system(syscall: String, path: String, errno: Int32)
    /// The path does not fit in sockaddr_un (107 bytes).
    case pathTooLong(String)
    /// A live daemon already listens there: its socket is not taken over.
    case inUse(String)
    /// The peer closed the connection.
    case closed
    /// A receive timeout (`setReceiveTimeout`) passed with nothing received.
    case timedOut

    public var description: String {
        switch self {
        case .system(let syscall, let path, let errno):
            "\(syscall)(\(path)) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        case .pathTooLong(let path): "socket path is longer than 107 bytes: \(path)"
        case .inUse(let path): "another process is listening on \(path) (a live daemon's socket is never replaced)"
        case .closed: "the connection was closed by the peer"
        case .timedOut: "nothing was received within the receive timeout"
        }
    }
}

/// Who is at the other end of a connection, as the kernel says (SO_PEERCRED).
public struct PeerCredentials: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
}

/// A connected or listening Unix stream socket. A plain descriptor wrapper:
/// the owner closes it exactly once with `close()`.
public struct UnixSocket: Sendable {
    public let descriptor: Int32
    /// For error messages.
    public let path: String

    public init(descriptor: Int32, path: String) {
        self.descriptor = descriptor
        self.path = path
    }

    /// Listens on `path`. A socket file left by a crashed run (nobody
    /// accepts on it) is replaced; a live one is `inUse`. The file gets
    /// `mode` and, when given, group `gid`.
    public static func listen(path: String, mode: mode_t, group gid: gid_t?, backlog: Int32 = 128) throws(SocketError) -> UnixSocket {
        var address = try socketAddress(path)
        var info = stat()
        if lstat(path, &info) == 0 {
            guard info.st_mode & S_IFMT == S_IFSOCK else {
                throw .system(syscall: "listen", path: path, errno: EEXIST)  // never unlink a non-socket
            }
            if let probe = try? connect(path: path) {
                probe.close()
                throw .inUse(path)
            }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system(syscall: "socket", path: path, errno: errno) }
        let socket = UnixSocket(descriptor: fd, path: path)
        // Bind with a tight umask, then chmod: the file never exists wider than asked.
        let previous = umask(0o177)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        umask(previous)
        guard bound == 0 else { return try socket.fail("bind") }
        if let gid, chown(path, uid_t.max, gid) != 0 { return try socket.fail("chown") }
        guard chmod(path, mode) == 0 else { return try socket.fail("chmod") }
        guard Glibc.listen(fd, backlog) == 0 else { return try socket.fail("listen") }
        return socket
    }

    public static func connect(path: String) throws(SocketError) -> UnixSocket {
        var address = try socketAddress(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system(syscall: "socket", path: path, errno: errno) }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else { return try UnixSocket(descriptor: fd, path: path).fail("connect") }
        return UnixSocket(descriptor: fd, path: path)
    }

    /// Waits up to `timeoutMilliseconds` for a connection; nil when none came.
    public func accept(timeoutMilliseconds: Int32) throws(SocketError) -> UnixSocket? {
        guard try poll(events: Int16(POLLIN), timeoutMilliseconds: timeoutMilliseconds) else { return nil }
        let fd = wc_accept(descriptor)
        if fd < 0 {
            // The client gave up between poll and accept, or we are out of descriptors for a moment.
            if [EAGAIN, EINTR, ECONNABORTED, EMFILE, ENFILE].contains(errno) { return nil }
            throw .system(syscall: "accept", path: path, errno: errno)
        }
        return UnixSocket(descriptor: fd, path: path)
    }

    /// Whether the socket became ready for `events` within the timeout.
    public func poll(events: Int16, timeoutMilliseconds: Int32) throws(SocketError) -> Bool {
        var entry = pollfd(fd: descriptor, events: events, revents: 0)
        while true {
            let n = Glibc.poll(&entry, 1, timeoutMilliseconds)
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw .system(syscall: "poll", path: path, errno: errno) }
            return n > 0
        }
    }

    /// Sends all of `bytes` (blocking until the peer takes them).
    public func send(_ bytes: UnsafeRawBufferPointer) throws(SocketError) {
        var sent = 0
        while sent < bytes.count {
            let n = Glibc.send(descriptor, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw n == 0 || errno == EPIPE || errno == ECONNRESET ? .closed : .system(syscall: "send", path: path, errno: errno) }
            sent += n
        }
    }

    /// Sends all of `head` then all of `body` with one `sendmsg` when the
    /// peer takes it all (a reply's header and its payload in place, without
    /// first copying them together).
    public func send(_ head: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer) throws(SocketError) {
        // A tuple on the stack, not an array: no allocation per reply.
        var vectors = (
            iovec(iov_base: UnsafeMutableRawPointer(mutating: head.baseAddress), iov_len: head.count),
            iovec(iov_base: UnsafeMutableRawPointer(mutating: body.baseAddress), iov_len: body.count)
        )
        let n = withUnsafeMutablePointer(to: &vectors) { pair in
            var message = msghdr()
            message.msg_iov = UnsafeMutableRawPointer(pair).assumingMemoryBound(to: iovec.self)
            message.msg_iovlen = 2
            while true {
                let n = sendmsg(descriptor, &message, Int32(MSG_NOSIGNAL))
                if n < 0 && errno == EINTR { continue }
                return n
            }
        }
        guard n > 0 else { throw n == 0 || errno == EPIPE || errno == ECONNRESET ? .closed : .system(syscall: "sendmsg", path: path, errno: errno) }
        // The rest, if the socket buffer took only part.
        if n < head.count {
            try send(UnsafeRawBufferPointer(rebasing: head[n...]))
            try send(body)
        } else if n < head.count + body.count {
            try send(UnsafeRawBufferPointer(rebasing: body[(n - head.count)...]))
        }
    }

    public func send(_ bytes: [UInt8]) throws(SocketError) {
        var failure: SocketError?
        bytes.withUnsafeBytes { raw in
            do throws(SocketError) { try send(raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Sends all of `bytes` with `fd` attached to the first byte (SCM_RIGHTS).
    public func send(_ bytes: [UInt8], passing fd: Int32) throws(SocketError) {
        let first = bytes.withUnsafeBytes { wc_send_with_fd(descriptor, $0.baseAddress, $0.count, fd) }
        guard first > 0 else { throw errno == EPIPE || errno == ECONNRESET ? .closed : .system(syscall: "sendmsg", path: path, errno: errno) }
        if first < bytes.count { try send(Array(bytes[first...])) }
    }

    /// Receives what is there (at most `buffer.count` bytes); 0 at end of stream.
    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> Int {
        while true {
            let n = recv(descriptor, buffer.baseAddress, buffer.count, 0)
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == ECONNRESET { return 0 }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { throw .timedOut }
            guard n >= 0 else { throw .system(syscall: "recv", path: path, errno: errno) }
            return n
        }
    }

    /// Like `receive(into:)`, also collecting passed descriptors (the caller owns them).
    public func receive(into buffer: UnsafeMutableRawBufferPointer, descriptors: inout [Int32]) throws(SocketError) -> Int {
        var fds = [Int32](repeating: -1, count: 8)
        var count: Int32 = 0
        var truncated: Int32 = 0
        let n = wc_recv_with_fds(descriptor, buffer.baseAddress, buffer.count, &fds, 8, &count, &truncated)
        if n < 0 && errno == ECONNRESET { return 0 }
        guard n >= 0 else { throw .system(syscall: "recvmsg", path: path, errno: errno) }
        descriptors.append(contentsOf: fds[0..<Int(count)])
        return n
    }

    public func peerCredentials() throws(SocketError) -> PeerCredentials {
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        var pid: Int32 = 0
        guard wc_peer_credentials(descriptor, &uid, &gid, &pid) == 0 else {
            throw .system(syscall: "getsockopt(SO_PEERCRED)", path: path, errno: errno)
        }
        return PeerCredentials(uid: uid, gid: gid, pid: pid)
    }

    /// A send that blocks longer than this fails (a client that stopped
    /// reading cannot hold a daemon thread forever).
    public func setSendTimeout(seconds: Int) {
        var value = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Asks for a send buffer of `bytes` (the kernel caps it at
    /// net.core.wmem_max). A large one lets a multi-megabyte reply go out in
    /// a few wake-ups of the reader instead of one per 200 KiB.
    public func setSendBuffer(bytes: Int32) {
        var value = bytes
        setsockopt(descriptor, SOL_SOCKET, SO_SNDBUF, &value, socklen_t(MemoryLayout<Int32>.size))
    }

    /// A receive that waits longer than this throws `timedOut`.
    public func setReceiveTimeout(seconds: Int) {
        var value = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Wakes a thread blocked in receive on this socket (it sees end of stream).
    public func shutdownReading() { shutdown(descriptor, Int32(SHUT_RD)) }

    public func close() { _ = Glibc.close(descriptor) }

    private func fail(_ syscall: String) throws(SocketError) -> UnixSocket {
        let e = errno
        close()
        throw .system(syscall: syscall, path: path, errno: e)
    }

    private static func socketAddress(_ path: String) throws(SocketError) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw .pathTooLong(path) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }
}
