import CCurl
import Foundation
import Synchronization

/// The state of one request while curl runs it. Created by the caller, then
/// owned by the engine thread (whose callbacks alone touch it) until
/// `complete` hands the outcome back through the continuation.
final class Transfer: @unchecked Sendable {
    let request: HTTPRequest
    var continuation: CheckedContinuation<HTTPOutcome, Never>?
    let cancelled = Atomic<Bool>(false)

    private var easy: UnsafeMutableRawPointer?
    private var headerList: UnsafeMutablePointer<curl_slist>?
    // curl keeps this pointer for the whole transfer: it must not move.
    private let errorBuffer: UnsafeMutablePointer<CChar> = {
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        buffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        return buffer
    }()
    private var uploadOffset = 0
    private var status = 0
    private var headers: [String: String] = [:]
    private var body: [UInt8] = []
    private var written: UInt64 = 0
    private var sinkFailure: (syscall: String, errno: Int32)?
    /// A file sink's bytes not yet written: small chunks are gathered here
    /// and written `coalesceBytes` at a time (see `coalesce`).
    private var pending: UnsafeMutableRawBufferPointer?
    private var pendingCount = 0
    /// A file sink with a `DirectWriter`: `pending` is then one of the
    /// writer's buffers, and the bytes land on its threads.
    private var direct: (writer: DirectWriter, stream: DirectWriter.Stream)?

    /// How many bytes a file sink gathers before one `pwrite`. A store far
    /// away delivers a body in chunks of 16 KiB as they arrive (measured:
    /// 131,000 pwrites for a 2 GiB pull), and every pwrite takes the file's
    /// inode lock, which the other transfer thread writing the same file
    /// then waits on: under slow page-cache copies, 15% of a far pull's CPU
    /// was spent spinning on that lock. Chunks this large or larger (a near
    /// store's) are written as they come.
    static let coalesceBytes = 256 << 10

    init(_ request: HTTPRequest) {
        self.request = request
    }

    deinit {
        if let headerList { curl_slist_free_all(headerList) }
        errorBuffer.deallocate()
        if let direct {
            if let pending { direct.writer.giveBack(pending) }
        } else {
            pending?.deallocate()
        }
    }

    /// Sets every option on `easy`; returns the first failing code, if any.
    func configure(_ easy: UnsafeMutableRawPointer) -> CURLcode? {
        self.easy = easy
        let me = Unmanaged.passUnretained(self).toOpaque()
        var codes: [CURLcode] = []
        func set(_ option: CURLoption, _ value: Int) { codes.append(wc_easy_setopt_long(easy, option, value)) }
        func set(_ option: CURLoption, _ value: String) { codes.append(wc_easy_setopt_string(easy, option, value)) }

        set(CURLOPT_URL, request.url)
        set(CURLOPT_NOSIGNAL, 1)
        set(CURLOPT_PATH_AS_IS, 1)  // keys may contain "..", "//": send them as they are
        set(CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_1_1))  // parallel parts want parallel connections
        set(CURLOPT_CONNECTTIMEOUT_MS, request.connectTimeoutMilliseconds)
        set(CURLOPT_LOW_SPEED_LIMIT, 1024)
        set(CURLOPT_LOW_SPEED_TIME, request.lowSpeedSeconds)
        set(CURLOPT_BUFFERSIZE, 512 << 10)
        set(CURLOPT_TCP_KEEPALIVE, 1)
        codes.append(wc_easy_setopt_pointer(easy, CURLOPT_ERRORBUFFER, errorBuffer))
        if let caBundle = request.caBundle { set(CURLOPT_CAINFO, caBundle) }
        if let signing = request.signing {
            set(CURLOPT_AWS_SIGV4, signing.provider)
            set(CURLOPT_USERPWD, signing.userAndSecret)
        }

        switch request.method {
        case .get: break
        case .head: set(CURLOPT_NOBODY, 1)
        case .delete: set(CURLOPT_CUSTOMREQUEST, "DELETE")
        case .put:
            set(CURLOPT_UPLOAD, 1)
            codes.append(wc_easy_setopt_off(easy, CURLOPT_INFILESIZE_LARGE, curl_off_t(request.body?.count ?? 0)))
        case .post:
            set(CURLOPT_POST, 1)
            codes.append(wc_easy_setopt_off(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(request.body?.count ?? 0)))
        }
        if request.method == .put || request.method == .post {
            codes.append(wc_easy_setopt_data_callback(easy, CURLOPT_READFUNCTION, readCallback))
            codes.append(wc_easy_setopt_pointer(easy, CURLOPT_READDATA, me))
        }

        for line in request.headers { headerList = curl_slist_append(headerList, line) }
        if let headerList { codes.append(wc_easy_setopt_slist(easy, CURLOPT_HTTPHEADER, headerList)) }

        codes.append(wc_easy_setopt_data_callback(easy, CURLOPT_WRITEFUNCTION, writeCallback))
        codes.append(wc_easy_setopt_pointer(easy, CURLOPT_WRITEDATA, me))
        codes.append(wc_easy_setopt_data_callback(easy, CURLOPT_HEADERFUNCTION, headerCallback))
        codes.append(wc_easy_setopt_pointer(easy, CURLOPT_HEADERDATA, me))
        set(CURLOPT_NOPROGRESS, 0)
        codes.append(wc_easy_setopt_xferinfo_callback(easy, progressCallback))
        codes.append(wc_easy_setopt_pointer(easy, CURLOPT_XFERINFODATA, me))
        return codes.first { $0 != CURLE_OK }
    }

    /// Ends the transfer before curl ran it.
    func fail(code: UInt32, message: String) {
        resume(HTTPOutcome(
            curlCode: Int32(code), curlMessage: message, status: 0, headers: [:], body: [],
            written: 0, sinkFailure: nil, cancelled: cancelled.load(ordering: .relaxed)))
    }

    func complete(_ easy: UnsafeMutableRawPointer, code: CURLcode) {
        // What a file sink gathered lands before anyone hears of the outcome:
        // `written` must be on disk, and a part that failed midway keeps the
        // bytes it got (a prefix: retries start over anyway).
        if pendingCount > 0, case .file(let file, let offset, _, let progress) = request.sink {
            _ = flush(file, offset: offset, progress: progress)  // a failure is in sinkFailure
        }
        var response = 0
        _ = wc_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &response)
        let message = String(cString: errorBuffer)
        let outcome = HTTPOutcome(
            curlCode: Int32(code.rawValue),
            curlMessage: message.isEmpty ? String(cString: curl_easy_strerror(code)) : message,
            status: response, headers: headers, body: body, written: written,
            sinkFailure: sinkFailure, cancelled: cancelled.load(ordering: .relaxed))
        guard let direct else { return resume(outcome) }
        // Bytes handed to the writer are not on disk yet: the outcome waits
        // for them, and counts only what landed (a prefix, as above).
        self.easy = nil
        direct.writer.whenDrained(direct.stream) { [self] landed, failure in
            var outcome = outcome
            outcome.written = landed
            if outcome.sinkFailure == nil { outcome.sinkFailure = failure }
            resume(outcome)
        }
    }

    private func resume(_ outcome: HTTPOutcome) {
        let continuation = self.continuation
        self.continuation = nil
        self.easy = nil
        continuation?.resume(returning: outcome)
    }

    // MARK: callbacks (engine thread)

    fileprivate func receive(_ chunk: UnsafeRawBufferPointer) -> Int {
        if status == 0, let easy {
            var code = 0
            _ = wc_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &code)
            status = code
        }
        guard (200..<300).contains(status) else {
            // An error body: keep a bounded amount for its XML.
            if body.count < 256 << 10 { body.append(contentsOf: chunk) }
            return chunk.count
        }
        // A server that ignores Range sends the whole object: nothing of it
        // may land where the part asked for belongs. A 200 is right only
        // for a range that is the whole object (from 0, and as long). `get`
        // into memory takes a whole small object and slices it instead.
        if status == 200, let range = request.range, written == 0 {
            switch request.sink {
            case .file, .buffers:
                let length = headers["content-length"].flatMap { UInt64($0) }
                if range.lowerBound > 0 || (length != nil && length != UInt64(range.count)) {
                    sinkFailure = ("range-ignored", 0)
                    return 0
                }
            case .memory: break
            }
        }
        switch request.sink {
        case .file(let file, let offset, let length, let progress):
            guard written + UInt64(chunk.count) <= length else {
                sinkFailure = ("overflow", 0)
                return 0
            }
            return coalesce(chunk, into: file, offset: offset, progress: progress) ? chunk.count : 0
        case .buffers(let targets):
            // Which target `written` falls in, and where in it: targets are
            // few (the blocks of one read), so a walk from the front is cheap.
            var taken = 0
            var index = 0
            var skip = Int(written)
            while index < targets.count && skip >= targets[index].buffer.count {
                skip -= targets[index].buffer.count
                index += 1
            }
            while taken < chunk.count {
                guard index < targets.count else {
                    sinkFailure = ("overflow", 0)
                    return 0
                }
                let target = targets[index].buffer
                let n = min(chunk.count - taken, target.count - skip)
                (target.baseAddress! + skip).copyMemory(from: chunk.baseAddress! + taken, byteCount: n)
                taken += n
                skip = 0
                index += 1
            }
            written += UInt64(chunk.count)
            return chunk.count
        case .memory(let limit):
            guard body.count + chunk.count <= limit else {
                let ignored = status == 200 && request.range != nil
                sinkFailure = (ignored ? "range-ignored" : "overflow", 0)
                return 0
            }
            body.append(contentsOf: chunk)
            return chunk.count
        }
    }

    /// Takes `chunk` of a file sink: gathered in `pending` while small,
    /// written straight through when `pending` is empty and the chunk is
    /// large. `written` counts bytes taken; what is on disk lags it by
    /// `pendingCount`. False when a write failed (`sinkFailure` says why).
    private func coalesce(
        _ chunk: UnsafeRawBufferPointer, into file: OutputFile, offset: UInt64, progress: ProgressHandler?
    ) -> Bool {
        if let writer = file.directWriter { return gather(chunk, for: writer, file: file, progress: progress) }
        var taken = 0
        while taken < chunk.count {
            let rest = UnsafeRawBufferPointer(rebasing: chunk[taken...])
            if pendingCount == 0 && rest.count >= Self.coalesceBytes {
                let landed = write(rest, to: file, at: offset + written, progress: progress)
                written += UInt64(landed)
                return landed == rest.count
            }
            let buffer = pending ?? .allocate(byteCount: Self.coalesceBytes, alignment: 64)
            pending = buffer
            let n = min(rest.count, buffer.count - pendingCount)
            (buffer.baseAddress! + pendingCount).copyMemory(from: rest.baseAddress!, byteCount: n)
            pendingCount += n
            written += UInt64(n)
            taken += n
            if pendingCount == buffer.count {
                guard flush(file, offset: offset, progress: progress) else { return false }
            }
        }
        return true
    }

    /// Takes `chunk` into the writer's buffers, handing each over as it
    /// fills. False when an earlier write of this stream failed.
    private func gather(_ chunk: UnsafeRawBufferPointer, for writer: DirectWriter, file: OutputFile, progress: ProgressHandler?) -> Bool {
        let stream = direct?.stream ?? writer.makeStream(observer: file.observer, progress: progress)
        direct = (writer, stream)
        if let failure = writer.failure(of: stream) {
            sinkFailure = failure
            return false
        }
        var taken = 0
        while taken < chunk.count {
            let buffer = pending ?? writer.take()
            pending = buffer
            let n = min(chunk.count - taken, buffer.count - pendingCount)
            (buffer.baseAddress! + pendingCount).copyMemory(from: chunk.baseAddress! + taken, byteCount: n)
            pendingCount += n
            written += UInt64(n)
            taken += n
            if pendingCount == buffer.count { submitPending() }
        }
        return true
    }

    /// Hands `pending` to the direct writer, at the place it belongs.
    private func submitPending() {
        guard let direct, let pending, case .file(_, let offset, _, _) = request.sink else { return }
        direct.writer.submit(direct.stream, pending, count: pendingCount, at: offset + written - UInt64(pendingCount))
        self.pending = nil
        pendingCount = 0
    }

    /// Writes what `pending` holds, at the place it belongs. If the write
    /// fails, what did not land leaves `written` again: `written` counts
    /// bytes on disk, and the caller takes exactly that back from progress.
    private func flush(_ file: OutputFile, offset: UInt64, progress: ProgressHandler?) -> Bool {
        if direct != nil {
            submitPending()
            return true
        }
        guard let pending, pendingCount > 0 else { return true }
        let count = pendingCount
        let bytes = UnsafeRawBufferPointer(rebasing: pending[0..<count])
        let at = offset + written - UInt64(count)
        pendingCount = 0
        let landed = write(bytes, to: file, at: at, progress: progress)
        written -= UInt64(count - landed)
        return landed == count
    }

    /// pwrite of `bytes` at `at`; the observer and progress then see what
    /// landed. Returns how many bytes did: all, or fewer with `sinkFailure`
    /// set (a full disk can take part of a write and refuse the rest).
    private func write(
        _ bytes: UnsafeRawBufferPointer, to file: OutputFile, at: UInt64, progress: ProgressHandler?
    ) -> Int {
        var done = 0
        while done < bytes.count {
            let n = pwrite(file.descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(at + UInt64(done)))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                sinkFailure = ("pwrite", n < 0 ? errno : EIO)
                break
            }
            done += n
        }
        if done > 0 {
            file.observer?.wrote(UnsafeRawBufferPointer(rebasing: bytes[0..<done]), at: at)
            progress?(Int64(done))
        }
        return done
    }

    fileprivate func receiveHeader(_ line: UnsafeRawBufferPointer) {
        let text = String(decoding: line, as: UTF8.self)
        if text.hasPrefix("HTTP/") {
            // A new response (after 100 Continue or a redirect): start over.
            headers = [:]
            status = 0
            return
        }
        guard let colon = text.firstIndex(of: ":") else { return }
        let name = text[..<colon].lowercased()
        let value = text[text.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
        headers[name] = value
    }

    fileprivate func send(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        guard let payload = request.body else { return 0 }
        let n = min(buffer.count, payload.count - uploadOffset)
        payload.withUnsafeBytes { source in
            buffer.baseAddress!.copyMemory(from: source.baseAddress! + uploadOffset, byteCount: n)
        }
        uploadOffset += n
        return n
    }
}

// C callbacks: no captures; the Transfer comes back through the user pointer.

private let writeCallback: wc_curl_data_callback = { data, size, count, user in
    let transfer = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
    return transfer.receive(UnsafeRawBufferPointer(start: data, count: size * count))
}

private let headerCallback: wc_curl_data_callback = { data, size, count, user in
    let transfer = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
    transfer.receiveHeader(UnsafeRawBufferPointer(start: data, count: size * count))
    return size * count
}

private let readCallback: wc_curl_data_callback = { data, size, count, user in
    let transfer = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
    return transfer.send(into: UnsafeMutableRawBufferPointer(start: data, count: size * count))
}

private let progressCallback: wc_curl_xferinfo_callback = { user, _, _, _, _ in
    let transfer = Unmanaged<Transfer>.fromOpaque(user!).takeUnretainedValue()
    return transfer.cancelled.load(ordering: .relaxed) ? 1 : 0
}
