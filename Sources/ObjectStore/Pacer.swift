import Synchronization

/// Paces work to an average rate: each `reserve(n)` waits until the schedule
/// has room for n more bytes. Reservations are granted in order, each starting
/// where the previous one's share of time ends (or now, if the schedule has
/// fallen behind: idle time is not banked into a burst). Part-granular by
/// design: curl's own per-request cap only engages once a request has moved
/// more than one second's worth of bytes, which parts of a few MiB never do.
final class Pacer: Sendable {
    private let nanosecondsPerByte: Double
    private let nextStart = Mutex<ContinuousClock.Instant?>(nil)

    init(bytesPerSecond: UInt64) {
        nanosecondsPerByte = 1e9 / Double(max(1, bytesPerSecond))
    }

    func reserve(_ bytes: Int) async throws {
        let now = ContinuousClock.now
        let start = nextStart.withLock { next -> ContinuousClock.Instant in
            let start = max(now, next ?? now)
            next = start + .nanoseconds(Int64(Double(bytes) * nanosecondsPerByte))
            return start
        }
        if start > now { try await Task.sleep(until: start, clock: .continuous) }
    }
}
