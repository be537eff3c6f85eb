import Integrity
import Synchronization

/// The whole-file xxh3-128 of a partial, computed while its parts land rather
/// than in a second pass over the file afterwards.
///
/// xxh3-128 is sequential, parts land out of order. So the hasher keeps a
/// frontier: a part that lands at the frontier is hashed from the very buffer
/// its blocks were just verified from (no extra read), and so is every part
/// after it that landed earlier; those are read back from the partial (page
/// cache) as the frontier passes them. Workers take parts in order, so most
/// parts land at or near the frontier and little is read twice.
final class FrontierHasher: Sendable {
    private struct State: ~Copyable {
        var hasher = Hasher128()
        var next = 0
        var waiting = Set<Int>()
    }

    private let state: Mutex<State>
    private let partCount: Int
    private let read: @Sendable (Int) throws(StagingError) -> PartBuffer

    /// `ready`: parts already in the partial before this pull (resumed ones);
    /// `read(part)`: reads a part back from the partial.
    init(partCount: Int, ready: Set<Int>, read: @escaping @Sendable (Int) throws(StagingError) -> PartBuffer) {
        self.partCount = partCount
        self.read = read
        state = Mutex(State(waiting: ready))
    }

    /// Part `part` has landed and been verified; `bytes` are its contents.
    func landed(_ part: Int, bytes: UnsafeRawBufferPointer) throws(StagingError) {
        try state.withLock { (state: inout State) throws(StagingError) in
            guard part == state.next else {
                state.waiting.insert(part)
                return
            }
            state.hasher.update(bytes)
            state.next += 1
            try advance(&state)
        }
    }

    /// The digest, once every part has landed.
    func finish() throws(StagingError) -> Digest128 {
        try state.withLock { (state: inout State) throws(StagingError) in
            try advance(&state)
            precondition(state.next == partCount, "finish() before every part landed")
            return state.hasher.finalize()
        }
    }

    private func advance(_ state: inout State) throws(StagingError) {
        while state.waiting.remove(state.next) != nil {
            let buffer = try read(state.next)
            try buffer.withBytes { state.hasher.update($0) }
            state.next += 1
        }
    }
}

/// Bytes of one part; its memory goes back to `pool` (or is freed) with the value.
final class PartBuffer: @unchecked Sendable {
    private let storage: UnsafeMutableRawBufferPointer
    private let pool: BufferPool?
    let count: Int

    init(count: Int, from pool: BufferPool? = nil) {
        if let pool, count <= pool.capacity {
            storage = pool.take()
            self.pool = pool
        } else {
            storage = .allocate(byteCount: max(1, count), alignment: 64)
            self.pool = nil
        }
        self.count = count
    }

    deinit {
        if let pool { pool.give(storage) } else { storage.deallocate() }
    }

    /// The bytes, valid only inside `body`: the buffer is kept alive for exactly
    /// that long (a pointer escaping a temporary was a use-after-free).
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws(StagingError) -> R) throws(StagingError) -> R {
        defer { withExtendedLifetime(self) {} }
        return try body(UnsafeRawBufferPointer(rebasing: storage[0..<count]))
    }

    func withMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) -> R) -> R {
        defer { withExtendedLifetime(self) {} }
        return body(UnsafeMutableRawBufferPointer(rebasing: storage[0..<count]))
    }
}

/// Part-sized buffers for reuse. Fresh memory for every part cost a page fault
/// and a kernel-zeroed page per 4 KiB (measured: pull used twice fetch's CPU,
/// peak RSS 415 MiB); a few recycled buffers cost neither.
final class BufferPool: Sendable {
    /// Raw memory crosses threads only through the pool's lock.
    private struct Block: @unchecked Sendable {
        let memory: UnsafeMutableRawBufferPointer
    }

    let capacity: Int
    private let limit: Int
    private let free = Mutex<[Block]>([])

    init(capacity: Int, keep limit: Int) {
        self.capacity = max(1, capacity)
        self.limit = limit
    }

    deinit {
        free.withLock { blocks in for block in blocks { block.memory.deallocate() } }
    }

    func take() -> UnsafeMutableRawBufferPointer {
        free.withLock { $0.popLast() }?.memory ?? .allocate(byteCount: capacity, alignment: 64)
    }

    func give(_ memory: UnsafeMutableRawBufferPointer) {
        let block = Block(memory: memory)
        let kept = free.withLock { blocks -> Bool in
            guard blocks.count < limit else { return false }
            blocks.append(block)
            return true
        }
        if !kept { memory.deallocate() }
    }
}
