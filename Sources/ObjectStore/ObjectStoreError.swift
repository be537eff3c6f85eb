#if canImport(Glibc)
import Glibc
#endif

/// Where an object-store error happened, and what the store said. Carries no
/// credentials: it is safe to log and to show.
public struct ErrorContext: Sendable, Equatable {
    /// The S3 operation or store call: "GetObject", "ListObjectsV2", "read", ...
    public var operation: String
    /// `s3://bucket` or `file:///dir`.
    public var store: String
    public var key: String?
    public var range: Range<UInt64>?
    /// HTTP status, when there was a response.
    public var status: Int?
    /// The store's own error code (`NoSuchKey`, `SlowDown`, ...).
    public var code: String?
    public var message: String?
    public var requestID: String?

    public init(
        operation: String, store: String, key: String? = nil, range: Range<UInt64>? = nil,
        status: Int? = nil, code: String? = nil, message: String? = nil, requestID: String? = nil
    ) {
        self.operation = operation
        self.store = store
        self.key = key
        self.range = range
        self.status = status
        self.code = code
        self.message = message
        self.requestID = requestID
    }

    var summary: String {
        var target = store
        if let key { target += "/" + key }
        var text = "\(operation) \(target)"
        if let range { text += " bytes \(range.lowerBound)-\(range.upperBound &- 1)" }
        var said: [String] = []
        if let code { said.append(code) }
        if let status { said.append("HTTP \(status)") }
        if !said.isEmpty { text += ": " + said.joined(separator: ", ") }
        if let message, !message.isEmpty { text += ": " + message }
        if let requestID { text += " (request id \(requestID))" }
        return text
    }
}

/// Every error an object store throws.
public indirect enum ObjectStoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No such object (S3 `NoSuchKey`, or a 404 to HEAD).
    case notFound(ErrorContext)
    /// No such bucket (S3 `NoSuchBucket`) or no such root directory.
    case bucketNotFound(ErrorContext)
    /// Credentials refused: `AccessDenied`, `InvalidAccessKeyId`, `SignatureDoesNotMatch`, ...
    case accessDenied(ErrorContext)
    /// The store asked us to slow down (`SlowDown`, HTTP 503 or 429).
    case slowDown(ErrorContext)
    /// The range starts at or past the end of the object.
    case invalidRange(ErrorContext)
    /// The object changed while it was being read (its ETag no longer matches).
    case preconditionFailed(ErrorContext)
    /// Any other error response from the store.
    case server(ErrorContext)
    /// The request never got a complete answer: refused, reset, timed out, truncated.
    case transport(ErrorContext, curlCode: Int32)
    /// A response that does not follow the protocol: unparsable XML, wrong length.
    case invalidResponse(ErrorContext, reason: String)
    /// A ranged GET answered with the whole object (200, not 206): the
    /// endpoint (or a proxy in front of it) ignores Range, which every pull
    /// and read-through needs. Not retried: asking again gets the same.
    case rangeIgnored(ErrorContext)
    /// A key that cannot name an object here (`..` in a file store, NUL, empty).
    case invalidKey(String, reason: String)
    /// A local system call failed (writing a downloaded part, reading a file).
    case localIO(syscall: String, path: String, errno: Int32)
    /// Retryable failures went on past the retry budget; `last` is the final one.
    case retriesExhausted(attempts: Int, last: ObjectStoreError)
    case cancelled

    public var description: String {
        switch self {
        case .notFound(let c): "not found: " + c.summary
        case .bucketNotFound(let c): "bucket not found: " + c.summary
        case .accessDenied(let c): "access denied: " + c.summary
        case .slowDown(let c): "store asked to slow down: " + c.summary
        case .invalidRange(let c): "invalid range: " + c.summary
        case .preconditionFailed(let c): "object changed during the transfer: " + c.summary
        case .server(let c): "store error: " + c.summary
        case .transport(let c, let curlCode): "transport error (curl \(curlCode)): " + c.summary
        case .invalidResponse(let c, let reason): "invalid response (\(reason)): " + c.summary
        case .rangeIgnored(let c):
            "the store ignored the Range header (it sent the whole object, HTTP 200, instead of the bytes asked for, HTTP 206); "
                + "weightcache reads objects in ranged GETs and cannot use this endpoint as it is: " + c.summary
        case .invalidKey(let key, let reason): "invalid key \(String(reflecting: key)): \(reason)"
        case .localIO(let syscall, let path, let errno):
            "\(syscall)(\(path)) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        case .retriesExhausted(let attempts, let last): "gave up after \(attempts) attempts: \(last)"
        case .cancelled: "cancelled"
        }
    }

    /// Whether trying the same request again may succeed: throttling, 5xx,
    /// and transport failures (resets, refusals, timeouts, truncation).
    public var isRetryable: Bool {
        switch self {
        case .slowDown: true
        case .transport(_, let curlCode): !Self.permanentCurlCodes.contains(curlCode)
        case .server(let c): (c.status ?? 0) >= 500 || c.code == "RequestTimeout" || c.code == "InternalError"
        case .invalidResponse(let c, _): c.status.map { $0 < 300 } ?? false  // truncated body
        default: false
        }
    }

    /// curl failures that trying again cannot fix: a bad URL or protocol, an
    /// unknown host, and TLS trust problems (certificates, CA bundle, pinning).
    static let permanentCurlCodes: Set<Int32> = [1, 3, 6, 51, 58, 60, 77, 83, 90, 91]

    /// The error underneath retries.
    public var underlying: ObjectStoreError {
        if case .retriesExhausted(_, let last) = self { return last.underlying }
        return self
    }
}
