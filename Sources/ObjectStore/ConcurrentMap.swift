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
/// at once, taken in index order, results in index order. The first error
/// cancels the rest and is thrown; bounded workers (not a task per index) keep
/// what is in flight at `concurrency` items however large `count` is.
public func concurrentMap<T: Sendable>(
    count: Int, concurrency: Int, _ transform: @escaping @Sendable (Int) async throws -> T
) async throws -> [T] {
    let dispenser = IndexDispenser(count: count)
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
}

/// `concurrentMap` for store work: errors stay `ObjectStoreError`.
func concurrentStoreMap<T: Sendable>(
    count: Int, concurrency: Int, _ transform: @escaping @Sendable (Int) async throws(ObjectStoreError) -> T
) async throws(ObjectStoreError) -> [T] {
    do {
        return try await concurrentMap(count: count, concurrency: concurrency) { index in try await transform(index) }
    } catch let error as ObjectStoreError {
        throw error
    } catch {
        throw .cancelled
    }
}
