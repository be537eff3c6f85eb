/// How often and how patiently a failed request is tried again: exponential
/// backoff with full jitter (AWS's recommendation: sleep a random time in
/// `0 ... min(maxDelay, baseDelay * 2^attempt)`), so that many clients that
/// failed together do not come back together.
public struct RetryPolicy: Sendable, Equatable {
    /// Retries after the first attempt; 0 means one attempt only.
    public var maxRetries: Int
    public var baseDelayMilliseconds: Int
    public var maxDelayMilliseconds: Int

    public init(maxRetries: Int = 5, baseDelayMilliseconds: Int = 200, maxDelayMilliseconds: Int = 10_000) {
        self.maxRetries = maxRetries
        self.baseDelayMilliseconds = baseDelayMilliseconds
        self.maxDelayMilliseconds = maxDelayMilliseconds
    }

    /// The upper bound of the delay before retry number `retry` (1-based).
    public func delayCeiling(beforeRetry retry: Int) -> Int {
        let exponent = min(retry - 1, 30)
        let grown = baseDelayMilliseconds.multipliedReportingOverflow(by: 1 << exponent)
        return min(maxDelayMilliseconds, grown.overflow ? Int.max : grown.partialValue)
    }

    /// A jittered delay before retry number `retry` (1-based).
    public func delay(beforeRetry retry: Int, using generator: inout some RandomNumberGenerator) -> Duration {
        let ceiling = delayCeiling(beforeRetry: retry)
        return .milliseconds(ceiling <= 0 ? 0 : Int.random(in: 0...ceiling, using: &generator))
    }

    /// Runs `attempt` until it succeeds, throws a non-retryable error, or the
    /// budget is spent (then `retriesExhausted`). `onRetry` hears each failure
    /// that will be retried, with the retry number.
    public func run<T: Sendable>(
        _ attempt: () async throws(ObjectStoreError) -> T,
        onRetry: (ObjectStoreError, Int, Duration) -> Void = { _, _, _ in }
    ) async throws(ObjectStoreError) -> T {
        var generator = SystemRandomNumberGenerator()
        var retry = 0
        while true {
            do {
                return try await attempt()
            } catch {
                guard error.isRetryable else { throw error }
                guard retry < maxRetries else {
                    throw retry == 0 ? error : .retriesExhausted(attempts: retry + 1, last: error)
                }
                retry += 1
                let pause = delay(beforeRetry: retry, using: &generator)
                onRetry(error, retry, pause)
                do { try await Task.sleep(for: pause) } catch { throw .cancelled }
            }
        }
    }
}
