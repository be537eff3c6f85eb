import CoreMetrics

/// What the S3 client reports through swift-metrics (a no-op unless the
/// program bootstraps a backend: `weightcache serve` does, with Prometheus,
/// when `metrics.address` is set). Documented in docs/metrics.md.
enum S3Metrics {
    /// Seconds per S3 request (each attempt), by operation.
    static let requestDuration = "weightcache_s3_request_duration_seconds"
    /// Failed attempts, by operation and error code (the store's code, or the HTTP status, or "transport").
    static let errors = "weightcache_s3_errors_total"

    static func record(operation: String, nanoseconds: Int64, error: ObjectStoreError?) {
        Timer(label: requestDuration, dimensions: [("operation", operation)]).recordNanoseconds(nanoseconds)
        guard let error else { return }
        Counter(label: errors, dimensions: [("operation", operation), ("code", code(error))]).increment()
    }

    static func code(_ error: ObjectStoreError) -> String {
        switch error {
        case .notFound(let c), .bucketNotFound(let c), .accessDenied(let c), .slowDown(let c), .invalidRange(let c),
            .preconditionFailed(let c), .server(let c):
            c.code ?? c.status.map(String.init) ?? "unknown"
        case .transport: "transport"
        case .invalidResponse: "invalid-response"
        case .rangeIgnored: "range-ignored"
        case .invalidKey: "invalid-key"
        case .localIO: "local-io"
        case .retriesExhausted(_, let last): code(last)
        case .cancelled: "cancelled"
        }
    }
}
