import Dispatch

/// Runs async work to completion from a plain thread (a connection thread),
/// which then blocks. Never call it from a task of the cooperative pool: the
/// pool has as many threads as cores, and a blocked one may be the one the
/// work needs.
func blocking<T: Sendable>(_ work: @escaping @Sendable () async throws -> T) throws -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        do { box.result = .success(try await work()) } catch { box.result = .failure(error) }
        done.signal()
    }
    done.wait()
    return try box.result!.get()
}

/// Written by one task before the semaphore is signalled, read after the wait.
private final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, any Error>?
}
