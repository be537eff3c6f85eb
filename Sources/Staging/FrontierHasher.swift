import Integrity
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The whole-file xxh3-128 of a partial, computed while its parts land rather
/// than in a second pass over the file afterwards.
///
/// xxh3-128 is sequential, parts land out of order. So the hasher keeps a
/// frontier: when the part at the frontier lands it is hashed, and so is
/// every part after it that landed earlier. How a part is read is the
/// caller's `read`: after buffered writes, where it lies in the page cache,
/// through a read-only mapping (`withMapping`: no copy, nothing read from
/// disk); after O_DIRECT writes, from the writer's kept buffers where they
/// still wait in memory, else back from disk with O_DIRECT
/// (`DirectWriter.read`), so the check does not fill the page cache.
/// Workers take parts in order, so the frontier trails the download closely
/// and the hash is done a part after the last byte lands.
final class FrontierHasher: Sendable {
    private struct State: ~Copyable {
        var hasher = Hasher128()
        var next = 0
        var waiting = Set<Int>()
    }

    private let state: Mutex<State>
    private let partCount: Int
    private let read: @Sendable (Int, (UnsafeRawBufferPointer) -> Void) throws(StagingError) -> Void

    /// `ready`: parts already in the partial before this pull (resumed ones);
    /// `read(part, body)`: runs `body` on a part's bytes in the partial.
    init(
        partCount: Int, ready: Set<Int>,
        read: @escaping @Sendable (Int, (UnsafeRawBufferPointer) -> Void) throws(StagingError) -> Void
    ) {
        self.partCount = partCount
        self.read = read
        state = Mutex(State(waiting: ready))
    }

    /// Part `part` has landed in the partial and been verified.
    func landed(_ part: Int) throws(StagingError) {
        try state.withLock { (state: inout State) throws(StagingError) in
            state.waiting.insert(part)
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
            try read(state.next) { state.hasher.update($0) }
            state.next += 1
        }
    }
}

/// Runs `body` on `range` of the file open as `descriptor`, mapped read-only
/// and shared: the page cache's own pages, so reading them costs no copy.
/// Mapped one part at a time and unmapped right after, so that a pull's
/// resident memory stays a few parts, not the file (mapped pages count in RSS).
func withMapping(
    _ descriptor: Int32, _ range: Range<UInt64>, path: String, _ body: (UnsafeRawBufferPointer) -> Void
) throws(StagingError) {
    guard !range.isEmpty else { return body(UnsafeRawBufferPointer(start: nil, count: 0)) }
    // mmap wants a page-aligned offset; parts start on block boundaries, but be safe.
    let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
    let start = range.lowerBound / page * page
    let length = Int(range.upperBound - start)
    guard let address = mmap(nil, length, PROT_READ, MAP_SHARED, descriptor, off_t(start)), address != MAP_FAILED else {
        throw .localIO(syscall: "mmap", path: path, errno: errno)
    }
    defer { munmap(address, length) }
    body(UnsafeRawBufferPointer(start: address + Int(range.lowerBound - start), count: Int(range.count)))
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
