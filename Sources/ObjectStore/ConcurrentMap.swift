import Synchronization

/// Hands out the indices 0..<count to workers, each index once.
private final class IndexDispenser: Sendable {
    private let next = Mutex(0)
    private let count: Int

    init(count: Int) { self.count = count }

    func take() -> Int? {
        next.withLock { value in
            guard value < count else { return nil }
            defer { value += 1 }
            return value
        }
    }
}

/// `transform(0) ... transform(count - 1)` with at most `concurrency` running
/// at once, results in index order. The first error cancels the rest and is
/// thrown; bounded workers (not a task per index) keep memory at `concurrency`
/// items in flight however large `count` is.
func concurrentMap<T: Sendable>(
    count: Int, concurrency: Int,
    _ transform: @escaping @Sendable (Int) async throws(ObjectStoreError) -> T
) async throws(ObjectStoreError) -> [T] {
    let dispenser = IndexDispenser(count: count)
    do {
        return try await withThrowingTaskGroup(of: [(Int, T)].self) { group in
            for _ in 0..<max(1, min(concurrency, count)) {
                group.addTask {
                    var done: [(Int, T)] = []
                    while let index = dispenser.take() {
                        try Task.checkCancellation()
                        done.append((index, try await transform(index)))
                    }
                    return done
                }
            }
            var results = [T?](repeating: nil, count: count)
            for try await batch in group {
                for (index, value) in batch { results[index] = value }
            }
            return results.map { $0! }
        }
    } catch let error as ObjectStoreError {
        throw error
    } catch {
        throw .cancelled
    }
}
