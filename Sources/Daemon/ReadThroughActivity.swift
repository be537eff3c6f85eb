import Synchronization

/// Whether readers are fetching blocks of unstaged files from the store right
/// now, so that the pull a cold read starts can wait for them to go quiet.
///
/// A cold read starts its model's pull. Started at once, the pull's first
/// parts (`transfer.concurrency` of them, 8 MiB each) take every connection
/// and much of the CPU just as the reader asks for its first tensor, and
/// fetch the same bytes from the front of the same file: measured here, a
/// 125 MiB first tensor took 0.6–1.5 s beside the pull against 0.4 s alone.
/// Slot priority (`PartSlots`) keeps readers first once both are queued; the
/// deferral covers the start. It is bounded (`atMost`), and cut short as
/// soon as anyone waits for the pull itself (`open`, `preload`).
final class ReadThroughActivity: Sendable {
    private struct State {
        var inFlight = 0
        var lastEnd = ContinuousClock.now
    }
    private let state = Mutex(State())

    init() {}

    /// Runs one remote block fetch, counted.
    func fetching<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        state.withLock { $0.inFlight += 1 }
        defer {
            state.withLock {
                $0.inFlight -= 1
                $0.lastEnd = .now
            }
        }
        return try body()
    }

    /// A reader is about to fetch: the quiet period starts again from now
    /// (the pull a cold read starts is set up before the read's first fetch).
    func touch() { state.withLock { $0.lastEnd = .now } }

    /// True when no fetch is running and none ended in the last `quiet`.
    func isQuiet(for quiet: Duration) -> Bool {
        state.withLock { $0.inFlight == 0 && ContinuousClock.now - $0.lastEnd >= quiet }
    }

    /// Returns once readers have been quiet for `quiet`, after `atMost`, when
    /// `urgent()` turns true, or when the task is cancelled.
    func waitUntilQuiet(for quiet: Duration, atMost: Duration, urgent: () -> Bool) async {
        let deadline = ContinuousClock.now + atMost
        while !isQuiet(for: quiet) && !urgent() && ContinuousClock.now < deadline {
            do { try await Task.sleep(for: .milliseconds(10)) } catch { return }
        }
    }
}
