// S3Client: S3's REST API over libcurl, signed with SigV4.
//
// libcurl signs (CURLOPT_AWS_SIGV4); we add what curl 7.88 leaves out:
// `x-amz-content-sha256: UNSIGNED-PAYLOAD` (servers reject a signature
// without it), the session token header, and canonical URLs (S3URLBuilder).
// Every request goes through `send`, which applies the retry policy and turns
// curl codes, HTTP statuses and S3 error documents into `ObjectStoreError`.
import Foundation
import Synchronization
import Logging

/// A connection to one S3-compatible endpoint. Thread-safe; share one per
/// process so that all transfers share its connection pools and threads.
///
/// Requests are spread over a few curl engines, each a thread of its own
/// receiving its transfers' bodies, writing them and hashing them (a pull's
/// block checks run on the receiving thread, while the bytes are in cache).
/// One thread capped a pull at what one core can receive, copy and hash.
/// One engine per 2 parts in flight, at most one per core: on a 16-core GPU
/// node, 8 parts in flight over 4 engines pulled 3132 MiB/s (buffered writes)
/// against 2498 over 2 (one per 4 parts), 0.82 and 0.65 of curl's ceiling
/// (docs/performance.md, "On a GPU node"). A 2-core node keeps its 2.
public final class S3Client: Sendable {
    public let settings: S3Settings
    let urls: S3URLBuilder
    private let engines: [CurlEngine]
    private let nextEngine = Atomic<Int>(0)
    private let logger: Logger

    public init(settings: S3Settings, logger: Logger) throws(ObjectStoreError) {
        self.settings = settings
        self.urls = try S3URLBuilder(settings: settings)
        let count = max(1, min(ProcessInfo.processInfo.activeProcessorCount, settings.concurrency / 2))
        let connections = max(4, settings.concurrency * 2 / count)
        self.engines = (0..<count).map { _ in CurlEngine(maxConnections: connections) }
        self.logger = logger
    }

    /// The store for one bucket.
    public func bucket(_ name: String) -> S3Store {
        S3Store(client: self, bucket: name)
    }

    /// Creates `name`; a bucket we already own is not an error.
    public func createBucket(_ name: String) async throws(ObjectStoreError) {
        var body: [UInt8]? = nil
        if settings.endpoint == nil && settings.region != "us-east-1" {
            body = Array(("<CreateBucketConfiguration><LocationConstraint>\(settings.region)"
                + "</LocationConstraint></CreateBucketConfiguration>").utf8)
        }
        let context = ErrorContext(operation: "CreateBucket", store: "s3://\(name)")
        do {
            _ = try await send(request(.put, bucket: name, body: body), context)
        } catch .server(let c) where c.code == "BucketAlreadyOwnedByYou" {
            return
        }
    }

    /// Deletes an empty bucket.
    public func deleteBucket(_ name: String) async throws(ObjectStoreError) {
        _ = try await send(
            request(.delete, bucket: name), ErrorContext(operation: "DeleteBucket", store: "s3://\(name)"))
    }

    // MARK: requests

    /// `range`: a ranged GET. It sets the Range header and tells the transfer
    /// what to expect, so that a server ignoring it is caught (`rangeIgnored`).
    func request(
        _ method: HTTPRequest.Method, bucket: String?, key: String? = nil, query: [(String, String)] = [],
        range: Range<UInt64>? = nil, headers: [String] = [], body: [UInt8]? = nil
    ) -> HTTPRequest {
        var request = HTTPRequest(method: method, url: urls.url(bucket: bucket, key: key, query: query))
        request.headers = (range.map { ["Range: bytes=\($0.lowerBound)-\($0.upperBound - 1)"] } ?? []) + headers
            + ["x-amz-content-sha256: UNSIGNED-PAYLOAD"]
        request.range = range
        request.body = body
        request.connectTimeoutMilliseconds = settings.connectTimeoutMilliseconds
        request.lowSpeedSeconds = settings.lowSpeedTimeoutSeconds
        request.caBundle = settings.caBundle
        if let credentials = settings.credentials {
            request.signing = HTTPRequest.Signing(
                provider: "aws:amz:\(settings.region):s3",
                userAndSecret: "\(credentials.accessKeyID):\(credentials.secretAccessKey)")
            if let token = credentials.sessionToken {
                request.headers.append("x-amz-security-token: \(token)")
            }
        }
        return request
    }

    /// Runs `request` under the retry policy; returns a 2xx outcome.
    func send(
        _ request: HTTPRequest, _ context: ErrorContext, progress: ProgressHandler? = nil
    ) async throws(ObjectStoreError) -> HTTPOutcome {
        try await settings.retry.run { () async throws(ObjectStoreError) -> HTTPOutcome in
            let started = ContinuousClock.now
            let engine = engines[nextEngine.add(1, ordering: .relaxed).oldValue % engines.count]
            let outcome = await engine.perform(request)
            let error = Self.error(in: outcome, of: request, context)
            let elapsed = (ContinuousClock.now - started).components
            S3Metrics.record(
                operation: context.operation, nanoseconds: elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000,
                error: error)
            if let error {
                if case .file = request.sink, outcome.written > 0 { progress?(-Int64(outcome.written)) }
                throw error
            }
            return outcome
        } onRetry: { error, retry, pause in
            logger.notice(
                "retrying \(retry)/\(settings.retry.maxRetries) in \(pause): \(error)")
        }
    }

    /// The error an outcome stands for, or nil for a good response.
    static func error(in outcome: HTTPOutcome, of request: HTTPRequest, _ base: ErrorContext) -> ObjectStoreError? {
        var context = base
        if outcome.cancelled { return .cancelled }
        if let failure = outcome.sinkFailure {
            if failure.syscall == "overflow" {
                context.status = outcome.status
                return .invalidResponse(context, reason: "more bytes than requested")
            }
            if failure.syscall == "range-ignored" {
                context.status = outcome.status
                return .rangeIgnored(context)
            }
            if case .file(let file, _, _, _) = request.sink {
                return .localIO(syscall: failure.syscall, path: file.path, errno: failure.errno)
            }
        }
        guard outcome.curlCode == 0 else {
            context.message = outcome.curlMessage
            return .transport(context, curlCode: outcome.curlCode)
        }
        context.status = outcome.status
        context.requestID = outcome.headers["x-amz-request-id"]
        if (200..<300).contains(outcome.status) {
            if let length = request.sink.expectedLength, outcome.written != length {
                return .invalidResponse(context, reason: "short body: \(outcome.written) of \(length) bytes")
            }
            return nil
        }
        let body = S3XML.error(outcome.body)
        context.code = body?.code
        context.message = body?.message
        if let id = body?.requestID { context.requestID = id }
        return classify(status: outcome.status, code: body?.code, context)
    }

    static func classify(status: Int, code: String?, _ base: ErrorContext) -> ObjectStoreError {
        var context = base
        context.status = status
        context.code = code ?? base.code
        switch code {
        case "NoSuchKey": return .notFound(context)
        case "NoSuchBucket": return .bucketNotFound(context)
        case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
            "InvalidToken", "AllAccessDisabled", "AccountProblem":
            return .accessDenied(context)
        case "SlowDown", "ServiceUnavailable", "Throttling", "TooManyRequests": return .slowDown(context)
        case "InvalidRange": return .invalidRange(context)
        case "PreconditionFailed": return .preconditionFailed(context)
        default: break
        }
        switch status {
        case 404: return .notFound(context)
        case 401, 403: return .accessDenied(context)
        case 412: return .preconditionFailed(context)
        case 416: return .invalidRange(context)
        case 429, 503: return .slowDown(context)
        default: return .server(context)
        }
    }
}
