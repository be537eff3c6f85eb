// CurlEngine: every HTTP request of the process on one thread.
//
// One thread drives a libcurl multi handle: requests arrive through a locked
// inbox (curl_multi_wakeup interrupts the poll), run concurrently on the
// multi's shared connection pool, and complete by resuming the caller's
// continuation. So N parallel ranged GETs cost one thread, not N, and callers
// are plain async functions that never block the cooperative pool (which has
// two threads on a two-core node).
//
// Bodies stream: a download writes each chunk with pwrite straight into its
// file at the right offset as curl hands it over, so memory does not grow with
// part size. curl's callbacks run on the engine thread; the per-transfer state
// they touch belongs to that thread until the transfer completes.
import CCurl
import Foundation
import Synchronization

/// One HTTP request for the engine. Header lines are complete ("Name: value").
struct HTTPRequest: Sendable {
    enum Method: String, Sendable {
        case get = "GET", head = "HEAD", put = "PUT", post = "POST", delete = "DELETE"
    }

    enum Sink: Sendable {
        /// Keep the body in memory, failing past `limit` bytes.
        case memory(limit: Int)
        /// Write a 2xx body into `file` at `offset`; more than `length` bytes is
        /// an error. Error bodies still go to memory, for their XML.
        case file(OutputFile, offset: UInt64, length: UInt64, progress: ProgressHandler?)
        /// Copy a 2xx body into caller-owned memory, filling each target in
        /// turn; more than they hold together is an error.
        case buffers([MemoryTarget])

        /// The exact 2xx body length expected, for sinks that have one.
        var expectedLength: UInt64? {
            switch self {
            case .memory: nil
            case .file(_, _, let length, _): length
            case .buffers(let targets): UInt64(targets.reduce(0) { $0 + $1.buffer.count })
            }
        }
    }

    /// `CURLOPT_AWS_SIGV4` provider ("aws:amz:REGION:s3") and `user:secret`.
    struct Signing: Sendable {
        var provider: String
        var userAndSecret: String
    }

    var method: Method
    var url: String
    var headers: [String] = []
    var body: [UInt8]? = nil
    var sink: Sink = .memory(limit: 64 << 20)
    var signing: Signing? = nil
    var connectTimeoutMilliseconds = 10_000
    /// A transfer slower than 1 KiB/s for this long is abandoned (curl 28).
    var lowSpeedSeconds = 30
    var caBundle: String? = nil
    /// The bytes a ranged GET asks for (its Range header says the same):
    /// the transfer checks the server honoured it before keeping any byte.
    var range: Range<UInt64>? = nil
}

/// What came back: a response, or curl's reason why none did.
struct HTTPOutcome: Sendable {
    /// CURLE_OK (0) when a complete response arrived, whatever its status.
    var curlCode: Int32
    var curlMessage: String
    var status: Int
    /// Lower-cased names.
    var headers: [String: String]
    var body: [UInt8]
    /// Bytes written into a file or buffer sink.
    var written: UInt64
    /// Set when a sink refused the body: a write failed (syscall, errno);
    /// ("overflow", 0): more bytes than it holds; ("range-ignored", 0): a
    /// whole object (200) where part of it (206) was asked for.
    var sinkFailure: (syscall: String, errno: Int32)?
    var cancelled: Bool
}

final class CurlEngine: Sendable {
    private let core: EngineCore

    /// Starts the engine thread. `maxConnections` caps the connection pool.
    init(maxConnections: Int) {
        _ = curlGlobalInit
        core = EngineCore(maxConnections: maxConnections)
        let core = self.core
        let thread = Thread { core.run() }
        thread.name = "weightcache-curl"
        thread.start()
    }

    deinit { core.stop() }

    /// Runs `request` to completion. Cancelling the calling task aborts it.
    func perform(_ request: HTTPRequest) async -> HTTPOutcome {
        let transfer = Transfer(request)
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                transfer.continuation = continuation
                core.submit(transfer)
            }
        } onCancel: {
            transfer.cancelled.store(true, ordering: .relaxed)
        }
    }
}

/// curl_global_init is not thread-safe and must run once before any handle.
private let curlGlobalInit: Void = {
    let code = wc_curl_global_init()
    precondition(code == CURLE_OK, "curl_global_init failed: \(code)")
}()

/// A raw libcurl handle that crosses to the engine thread once and stays there.
private struct Handle: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
}

private final class EngineCore: @unchecked Sendable {
    private struct Inbox {
        var pending: [Transfer] = []
        var stopping = false
    }

    private let multi: Handle
    private let inbox = Mutex(Inbox())
    // Engine thread only.
    private var active: [UnsafeMutableRawPointer: Transfer] = [:]
    private var idle: [UnsafeMutableRawPointer] = []

    init(maxConnections: Int) {
        guard let m = curl_multi_init() else { fatalError("curl_multi_init failed") }
        multi = Handle(pointer: m)
        _ = wc_multi_setopt_long(m, CURLMOPT_MAX_TOTAL_CONNECTIONS, max(1, maxConnections))
    }

    func submit(_ transfer: Transfer) {
        inbox.withLock { $0.pending.append(transfer) }
        curl_multi_wakeup(multi.pointer)
    }

    func stop() {
        inbox.withLock { $0.stopping = true }
        curl_multi_wakeup(multi.pointer)
    }

    func run() {
        let m = multi.pointer
        while true {
            let (incoming, stopping) = inbox.withLock { box in
                defer { box.pending.removeAll() }
                return (box.pending, box.stopping)
            }
            for transfer in incoming { start(transfer) }
            if stopping && active.isEmpty { break }
            var running: Int32 = 0
            _ = curl_multi_perform(m, &running)
            var left: Int32 = 0
            while let message = curl_multi_info_read(m, &left) {
                guard wc_multi_message_is_done(message) != 0, let easy = message.pointee.easy_handle
                else { continue }
                finish(easy, code: wc_multi_message_result(message))
            }
            _ = curl_multi_poll(m, nil, 0, 1000, nil)
        }
        for easy in idle { curl_easy_cleanup(easy) }
        curl_multi_cleanup(m)
    }

    private func start(_ transfer: Transfer) {
        let easy = idle.popLast() ?? curl_easy_init()!
        if let failure = transfer.configure(easy) {
            transfer.fail(code: failure.rawValue, message: "curl_easy_setopt failed")
            curl_easy_reset(easy)
            idle.append(easy)
            return
        }
        active[easy] = transfer
        _ = curl_multi_add_handle(multi.pointer, easy)
    }

    private func finish(_ easy: UnsafeMutableRawPointer, code: CURLcode) {
        _ = curl_multi_remove_handle(multi.pointer, easy)
        guard let transfer = active.removeValue(forKey: easy) else { return }
        transfer.complete(easy, code: code)
        curl_easy_reset(easy)
        idle.append(easy)
    }
}
