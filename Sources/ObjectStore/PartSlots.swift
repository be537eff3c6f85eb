import Synchronization

/// A shared cap on parts in flight across several downloads, granted by
/// priority: a multi-file pull gives each file its index as priority, so the
/// first file gets every slot it can use and later files only fill the gaps
/// (the tail of a file, when fewer parts than slots are left; its set-up and
/// publish). Files then overlap without reordering: the model still arrives
/// front to back, and the connection count stays at `concurrency`. The daemon
/// shares one set between its pulls and its read-through fetches, which come
/// first (negative priorities: blocks a reader waits on, then read-ahead): a
/// reader waiting on a block is served before a background pull's next part.
public final class PartSlots: Sendable {
    private struct Waiter {
        var priority: Int
        var ticket: Int
        var continuation: CheckedContinuation<Void, any Error>
    }
    private struct State {
        var free: Int
        var waiters: [Waiter] = []
        var tickets = 0
    }
    private let state: Mutex<State>

    public init(_ count: Int) { state = Mutex(State(free: max(1, count))) }

    /// Waits for a slot; lower `priority` first, then first come.
    public func acquire(priority: Int) async throws {
        let ticket = state.withLock { state -> Int? in
            if state.free > 0 && state.waiters.isEmpty {
                state.free -= 1
                return nil
            }
            state.tickets += 1
            return state.tickets
        }
        guard let ticket else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                enum Outcome { case cancelled, granted, queued }
                let outcome = state.withLock { state -> Outcome in
                    if Task.isCancelled { return .cancelled }
                    if state.free > 0 && state.waiters.isEmpty {
                        state.free -= 1
                        return .granted
                    }
                    let waiter = Waiter(priority: priority, ticket: ticket, continuation: continuation)
                    let at = state.waiters.firstIndex { ($0.priority, $0.ticket) > (priority, ticket) } ?? state.waiters.endIndex
                    state.waiters.insert(waiter, at: at)
                    return .queued
                }
                switch outcome {
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .granted: continuation.resume()
                case .queued: break  // resumed by release() or by cancellation
                }
            }
        } onCancel: {
            let waiter = state.withLock { state -> Waiter? in
                guard let index = state.waiters.firstIndex(where: { $0.ticket == ticket }) else { return nil }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Gives a slot back: to the first waiter, or to the pool.
    public func release() {
        let next = state.withLock { state -> Waiter? in
            if state.waiters.isEmpty {
                state.free += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.continuation.resume()
    }
}
