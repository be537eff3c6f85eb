import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The aligned memory direct writes go through, shared by every
/// `DirectWriter` of one staging directory (a daemon's, or a CLI pull's).
///
/// Why shared: each writer used to allocate its own buffers and free them
/// when its file was done, so a pull that overlaps two files held two sets,
/// and malloc kept what they freed. With buffers kept for the hash on top,
/// a daemon's peak RSS during a 2 GiB preload went from about 100 to 176 MiB
/// (transfer budget 64 MiB; 113 MiB with this pool). Here buffers go
/// from file to file: memory already backed is reused, which matters on VMs
/// whose host takes free memory back (a first touch then costs about 7 s per
/// GiB). They are mapped, not malloc'd, so that what is given up really goes
/// back to the system: when the last writer closes, every buffer is unmapped,
/// and an idle daemon holds none.
///
/// Why a limit: buffers a writer fills and hands to the disk are always
/// granted (a receiver must never wait for one: see `DirectWriter`), but
/// buffers it keeps after writing them, so that the whole-file hash need not
/// read them back, are kept only while everything handed out stays within
/// `limit` (a pull's transfer budget).
public final class DirectBuffers: Sendable {
    /// Memory O_DIRECT can use on any Linux block device in use.
    public static let alignment = 4096

    public let limit: Int

    private struct State {
        /// Unused buffers by size, ready to hand out again.
        var free: [Int: [UInt]] = [:]
        /// Bytes handed out and not given back.
        var held = 0
        var peak = 0
        var users = 0
    }
    private let state = Mutex(State())

    public init(limit: Int) { self.limit = max(0, limit) }

    deinit { trim() }

    /// A page-aligned buffer of `size` bytes (a multiple of `alignment`).
    /// Never waits, never fails short of the system's memory running out.
    public func take(_ size: Int) -> UnsafeMutableRawPointer {
        precondition(size > 0 && size % Self.alignment == 0)
        let reused = state.withLock { state -> UInt? in
            state.held += size
            state.peak = max(state.peak, state.held)
            return state.free[size]?.popLast()
        }
        if let reused { return UnsafeMutableRawPointer(bitPattern: reused)! }
        guard let fresh = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            fresh != MAP_FAILED
        else { fatalError("mmap of a \(size)-byte write buffer failed: errno \(errno)") }
        return fresh
    }

    /// Gives back a buffer from `take(size)`, to be handed out again.
    public func give(_ buffer: UnsafeMutableRawPointer, size: Int) {
        state.withLock { state in
            state.held -= size
            state.free[size, default: []].append(UInt(bitPattern: buffer))
        }
    }

    /// Whether the bytes handed out now exceed `limit`: a writer then lets go
    /// of buffers it keeps instead of keeping more.
    public var overLimit: Bool { state.withLock { $0.held > limit } }

    /// Bytes handed out now, and at most so far.
    public var held: (now: Int, peak: Int) { state.withLock { ($0.held, $0.peak) } }

    /// A writer starts using the pool.
    func open() { state.withLock { $0.users += 1 } }

    /// A writer is done with the pool (and has given back all it took); the
    /// last one out unmaps the free buffers.
    func close() {
        let last = state.withLock { state -> Bool in
            state.users -= 1
            return state.users == 0
        }
        if last { trim() }
    }

    private func trim() {
        let free = state.withLock { state -> [Int: [UInt]] in
            defer { state.free = [:] }
            return state.free
        }
        for (size, buffers) in free {
            for address in buffers { munmap(UnsafeMutableRawPointer(bitPattern: address), size) }
        }
    }
}
