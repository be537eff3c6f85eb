import CFileSystem
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Writes downloaded bytes into one file with O_DIRECT, on threads of its own.
///
/// Why not plain `pwrite`: a buffered write copies every byte into the page
/// cache, into memory the kernel must find first. For a model larger than a
/// node's spare memory that pushes out pages the serving processes need; on
/// the VMs measured here (docs/performance.md, "What limits each figure"),
/// memory that sat free is taken back by the host, and the first touch of it
/// costs about 7 s per GiB: a buffered 2 GiB pull used 2 to 25 CPU-seconds
/// depending on the minute, the same pull through this writer 1.9 to 2.6.
/// With O_DIRECT the disk reads from a few aligned buffers that are reused
/// for the whole file, so a pull touches no new memory, and leaves the page
/// cache to the readers.
///
/// Why threads: an O_DIRECT write returns once the disk has the bytes. Done
/// on the thread that receives (one for every transfer of the process), it
/// would stall every connection. So the receiver fills a buffer (`take`),
/// hands it over (`submit`), and takes the next; when `maxQueued` buffers wait
/// for the disk, `submit` waits too: the disk paces the download, and memory
/// stays bounded (one buffer per open stream plus the queue, and kept
/// buffers while the pool is under its limit; see `DirectBuffers`). `take` itself
/// never waits: a receiver holding partly filled buffers for several streams
/// must always be able to start another.
///
/// How many: 8 threads with up to 16 buffers queued keep 8 writes of 1 MiB
/// at the disk. On a GPU node's virtio disk (O_DIRECT by `dd`: 1351 MiB/s
/// at 1 MiB x 8 writers, 1143 with one) a 2 GiB pull ran at 1778 MiB/s
/// with them against 1665 with 4 threads and 8 queued, in the same run; on
/// the 2-core dev VM the two were level (829 and 823 MiB/s). Idle threads
/// cost nothing but their stacks.
///
/// Order: the writes of one `Stream` (one ranged GET) go to one thread and
/// land, and are shown to its observer, front to back. A failed write ends
/// the stream: what follows it is dropped, so what landed is a prefix.
///
/// Writes that are not aligned (a file's last bytes) go through the caller's
/// ordinary descriptor; Linux keeps the two coherent.
///
/// Keeping: a pull reads every part back once, in order, for the whole-file
/// hash (`read`). Read from disk, that doubled the disk's work and was most
/// of the gap between a verified pull and one with no whole-file check
/// (3.2-6.1 s against 2.4-2.7 s for 2 GiB, docs/performance-history.md). So written
/// buffers ahead of the reader are held back from reuse while the shared
/// `DirectBuffers` stay within their limit, and `read` takes them from
/// memory; only what did not fit is read back. They are the very bytes the
/// disk was given: the same assurance as hashing them through the page cache
/// after a buffered write. Over the limit the buffers farthest from the
/// reader go first: the nearest are read soonest.
public final class DirectWriter: @unchecked Sendable {
    /// Offset, length and memory alignment O_DIRECT needs on any Linux block
    /// device in use (logical blocks of 512 or 4096 bytes).
    public static let alignment = DirectBuffers.alignment

    /// A failed call and its errno, as `HTTPOutcome.sinkFailure` carries it.
    public typealias Failure = (syscall: String, errno: Int32)

    /// The O_DIRECT open flag (Glibc hides it from Swift: see CFileSystem).
    public static let oDirect = wc_o_direct()

    /// One ranged GET's writes.
    public final class Stream: @unchecked Sendable {
        fileprivate struct State {
            var queued = 0
            var landed: UInt64 = 0
            var failure: Failure?
            var drained: ((UInt64, Failure?) -> Void)?
        }
        fileprivate let observer: (any WriteObserver)?
        fileprivate let progress: ProgressHandler?
        fileprivate let worker: Worker
        fileprivate let state = Mutex(State())

        fileprivate init(observer: (any WriteObserver)?, progress: ProgressHandler?, worker: Worker) {
            self.observer = observer
            self.progress = progress
            self.worker = worker
        }
    }

    fileprivate struct Job {
        var stream: Stream
        var buffer: UnsafeMutableRawPointer
        var count: Int
        var offset: UInt64
    }

    /// One writer thread and its queue: a stream's jobs all go to one worker,
    /// so they land in order; each worker wakes only for its own jobs.
    fileprivate final class Worker: @unchecked Sendable {
        let condition = NSCondition()
        var jobs: [Job] = []  // guarded by condition
        var closing = false  // guarded by condition
        let done = DispatchSemaphore(value: 0)
    }

    public let path: String
    public let bufferSize: Int
    private let direct: Int32
    private let buffered: Int32
    private let readSize: Int
    private let readLock = NSLock()
    private let pool: DirectBuffers
    /// One per buffer that may wait for the disk: `submit` takes one, a finished write gives it back.
    private let credits: DispatchSemaphore
    private let workers: [Worker]
    private struct Buffers {
        var streams = 0
        var closed = false
        /// Written buffers held for `read`, by file offset; disjoint.
        var kept: [UInt64: Piece] = [:]
        /// `read` has been past here: nothing below is kept any more.
        var consumed: UInt64 = 0
        var fromMemory: UInt64 = 0
        var fromDisk: UInt64 = 0
    }
    private struct Piece {
        var address: UInt
        var count: Int
    }
    private let buffers = Mutex(Buffers())
    /// Nanoseconds receivers spent in `submit` waiting for the disk (all of
    /// them summed): what tells a disk-bound pull from a network-bound one.
    private let diskWaitNanoseconds = Atomic<UInt64>(0)

    /// Opens `path` a second time with O_DIRECT, beside `buffered` (the
    /// caller's descriptor, which stays the caller's). Nil where the
    /// filesystem refuses O_DIRECT (tmpfs before Linux 6.6, some FUSE and
    /// network filesystems): the caller then writes as before.
    /// `pool`: where buffers come from, shared with the other writers of a
    /// staging directory; a pool whose limit is 0 lets nothing be kept, and
    /// every `read` comes from disk.
    public init?(
        path: String, buffered: Int32, pool: DirectBuffers, bufferSize: Int = 1 << 20, maxQueued: Int = 16,
        threads: Int = 8, readSize: Int = 8 << 20
    ) {
        precondition(bufferSize > 0 && bufferSize % Self.alignment == 0 && maxQueued > 0 && threads > 0)
        precondition(readSize > 0 && readSize % Self.alignment == 0)
        self.pool = pool
        let fd = open(path, O_RDWR | O_CLOEXEC | Self.oDirect)
        guard fd >= 0 else { return nil }
        self.path = path
        self.direct = fd
        self.buffered = buffered
        self.bufferSize = bufferSize
        self.readSize = readSize
        self.credits = DispatchSemaphore(value: maxQueued)
        self.workers = (0..<threads).map { _ in Worker() }
        pool.open()
        // The threads hold the writer until `close` stops them.
        for worker in workers {
            let thread = Thread { [self] in work(worker) }
            thread.name = "weightcache-direct-write"
            thread.start()
        }
    }

    /// Waits for the queued writes, stops the threads and gives the buffers back.
    /// The owner must call it (the threads keep the writer alive until then),
    /// once every stream has drained; later calls do nothing.
    public func close() {
        let first = buffers.withLock { state in
            defer { state.closed = true }
            return !state.closed
        }
        guard first else { return }
        for worker in workers {
            worker.condition.lock()
            worker.closing = true
            worker.condition.signal()
            worker.condition.unlock()
        }
        for worker in workers { worker.done.wait() }
        let kept = buffers.withLock { state in
            defer { state.kept = [:] }
            return state.kept.values
        }
        for piece in kept { pool.give(UnsafeMutableRawPointer(bitPattern: piece.address)!, size: bufferSize) }
        pool.close()
        Glibc.close(direct)
    }

    /// A stream for one ranged GET: `observer` sees what lands, in order,
    /// and `progress` hears of it, both on a writer thread.
    public func makeStream(observer: (any WriteObserver)?, progress: ProgressHandler?) -> Stream {
        let index = buffers.withLock { state in
            state.streams += 1
            return state.streams % workers.count
        }
        return Stream(observer: observer, progress: progress, worker: workers[index])
    }

    /// An aligned buffer of `bufferSize` bytes to fill and `submit` (or `giveBack`).
    public func take() -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: pool.take(bufferSize), count: bufferSize)
    }

    /// Returns a buffer from `take` unused.
    public func giveBack(_ buffer: UnsafeMutableRawBufferPointer) {
        pool.give(buffer.baseAddress!, size: bufferSize)
    }

    /// Queues the first `count` bytes of `buffer` (from `take`) to be written
    /// at `offset`; waits while `maxQueued` buffers wait for the disk. The
    /// buffer is the writer's again afterwards. Dropped when the stream has
    /// failed already.
    public func submit(_ stream: Stream, _ buffer: UnsafeMutableRawBufferPointer, count: Int, at offset: UInt64) {
        let failed = stream.state.withLock { $0.failure != nil }
        guard !failed, count > 0 else { return giveBack(buffer) }
        if credits.wait(timeout: .now()) == .timedOut {
            // Every queued buffer is still waiting for the disk: the disk paces the download now.
            let start = DispatchTime.now().uptimeNanoseconds
            credits.wait()
            diskWaitNanoseconds.add(DispatchTime.now().uptimeNanoseconds - start, ordering: .relaxed)
        }
        stream.state.withLock { $0.queued += 1 }
        let worker = stream.worker
        worker.condition.lock()
        worker.jobs.append(Job(stream: stream, buffer: buffer.baseAddress!, count: count, offset: offset))
        worker.condition.signal()
        worker.condition.unlock()
    }

    /// The stream's first failed write, if any: the receiver stops early.
    public func failure(of stream: Stream) -> Failure? {
        stream.state.withLock { $0.failure }
    }

    /// Runs `body` with the bytes that landed and the failure, if any, once
    /// every write queued for `stream` is done: now, or on a writer thread.
    public func whenDrained(
        _ stream: Stream, _ body: @escaping @Sendable (UInt64, Failure?) -> Void
    ) {
        let now: (UInt64, Failure?)? = stream.state.withLock { state in
            if state.queued == 0 { return (state.landed, state.failure) }
            state.drained = body
            return nil
        }
        if let now { body(now.0, now.1) }
    }

    /// Runs `body` on the bytes of `range` in order, as the writes left
    /// them: kept buffers from memory (and then reused), the rest read back
    /// (`readFromDisk`). Meant to be called front to back, as a whole-file
    /// hash reads: nothing is kept below a range once it has been read.
    /// Throws the errno of a failed read.
    public func read(_ range: Range<UInt64>, _ body: (UnsafeRawBufferPointer) -> Void) throws(ObjectStoreError) {
        readLock.lock()
        defer { readLock.unlock() }
        var stale: [UInt] = []
        let pieces = buffers.withLock { state -> [(start: UInt64, piece: Piece)] in
            state.consumed = max(state.consumed, range.upperBound)
            var inside: [(start: UInt64, piece: Piece)] = []
            for (start, piece) in state.kept where start < range.upperBound {
                state.kept[start] = nil
                if start >= range.lowerBound && start + UInt64(piece.count) <= range.upperBound {
                    inside.append((start, piece))
                } else {
                    stale.append(piece.address)  // below the range, or across its end
                }
            }
            return inside.sorted { $0.start < $1.start }
        }
        defer {
            for address in stale + pieces.map(\.piece.address) {
                pool.give(UnsafeMutableRawPointer(bitPattern: address)!, size: bufferSize)
            }
        }
        var position = range.lowerBound
        var fromMemory: UInt64 = 0
        for (start, piece) in pieces {
            if start > position { try readFromDisk(position..<start, body) }
            body(UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: piece.address), count: piece.count))
            fromMemory += UInt64(piece.count)
            position = start + UInt64(piece.count)
        }
        if position < range.upperBound { try readFromDisk(position..<range.upperBound, body) }
        buffers.withLock { state in
            state.fromMemory += fromMemory
            state.fromDisk += UInt64(range.count) - fromMemory
        }
    }

    /// How long receivers have waited in `submit` for a queued write to
    /// finish (summed over the threads that submit): zero while the disk
    /// keeps up with the download.
    public var waitedForDisk: Duration {
        .nanoseconds(Int64(clamping: diskWaitNanoseconds.load(ordering: .relaxed)))
    }

    /// Bytes `read` has taken from kept buffers and from disk so far.
    public var readSources: (memory: UInt64, disk: UInt64) {
        buffers.withLock { ($0.fromMemory, $0.fromDisk) }
    }

    /// Reads `range` back with O_DIRECT, up to `readSize` bytes per pread
    /// (one large read lets the block layer run its pieces in parallel; 1
    /// MiB reads one after another were the slow part of a pull's whole-file
    /// check), without bringing it into the page cache. Bytes that O_DIRECT
    /// cannot reach (an unaligned start, or a filesystem that refuses it
    /// with EINVAL) come through the ordinary descriptor. Under `readLock`.
    private func readFromDisk(_ range: Range<UInt64>, _ body: (UnsafeRawBufferPointer) -> Void) throws(ObjectStoreError) {
        let buffer = pool.take(readSize)
        defer { pool.give(buffer, size: readSize) }
        var position = range.lowerBound
        while position < range.upperBound {
            let want = Int(min(UInt64(readSize), range.upperBound - position))
            // Whole aligned blocks: past the end of the file the read comes back short.
            let asked = (want + Self.alignment - 1) / Self.alignment * Self.alignment
            var got = 0
            var directRefused = position % UInt64(Self.alignment) != 0
            while got < want {
                let viaCache = directRefused || got % Self.alignment != 0
                let n = viaCache
                    ? pread(buffered, buffer + got, want - got, off_t(position) + off_t(got))
                    : pread(direct, buffer + got, asked - got, off_t(position) + off_t(got))
                if n < 0 && errno == EINTR { continue }
                if n < 0 && errno == EINVAL && !viaCache {
                    directRefused = true  // as in `write`: this read goes through the page cache
                    continue
                }
                guard n > 0 else { throw .localIO(syscall: "pread", path: path, errno: n < 0 ? errno : EIO) }
                got += n
            }
            body(UnsafeRawBufferPointer(start: buffer, count: want))
            position += UInt64(want)
        }
    }

    private func work(_ worker: Worker) {
        while true {
            worker.condition.lock()
            while worker.jobs.isEmpty && !worker.closing { worker.condition.wait() }
            guard !worker.jobs.isEmpty else {
                worker.condition.unlock()
                worker.done.signal()
                return
            }
            let job = worker.jobs.removeFirst()
            worker.condition.unlock()

            let stream = job.stream
            let skip = stream.state.withLock { $0.failure != nil }
            var done = 0
            var failure: Failure?
            if !skip { (done, failure) = write(job) }
            if done > 0 {
                stream.observer?.wrote(UnsafeRawBufferPointer(start: job.buffer, count: done), at: job.offset)
                stream.progress?(Int64(done))
            }
            let address = UInt(bitPattern: job.buffer)
            let kept = failure == nil && done == job.count && keep(Piece(address: address, count: done), at: job.offset)
            if !kept { pool.give(job.buffer, size: bufferSize) }
            credits.signal()
            let drained = stream.state.withLock { state -> (body: (UInt64, Failure?) -> Void, landed: UInt64, failure: Failure?)? in
                state.landed += UInt64(done)
                if state.failure == nil, let failure { state.failure = failure }
                state.queued -= 1
                guard state.queued == 0, let body = state.drained else { return nil }
                state.drained = nil
                return (body, state.landed, state.failure)
            }
            if let drained { drained.body(drained.landed, drained.failure) }
        }
    }

    /// Holds a written buffer for `read` while the pool is within its
    /// limit, making room by letting go of this writer's kept buffers that lie
    /// farther from the reader than it (the nearest are read soonest). Runs
    /// before the stream counts the write as done, so a part whose stream
    /// has drained has all its buffers kept or given back.
    private func keep(_ piece: Piece, at offset: UInt64) -> Bool {
        guard pool.limit > 0 else { return false }
        let end = offset + UInt64(piece.count)
        var letGo: [UInt] = []
        defer { for address in letGo { pool.give(UnsafeMutableRawPointer(bitPattern: address)!, size: bufferSize) } }
        return buffers.withLock { state in
            guard offset >= state.consumed else { return false }
            func drop(_ start: UInt64) -> Int {
                let old = state.kept.removeValue(forKey: start)!
                letGo.append(old.address)
                return bufferSize
            }
            // A later write of the same bytes (a part fetched again) replaces what was kept.
            var released = 0
            for (start, old) in state.kept where start < end && start + UInt64(old.count) > offset { released += drop(start) }
            // The pool counts this buffer and every kept one as held.
            let (held, _) = pool.held
            while held - released > pool.limit {
                guard let farthest = state.kept.keys.max(), farthest > offset else { return false }
                released += drop(farthest)
            }
            state.kept[offset] = piece
            return true
        }
    }

    /// pwrite until done: O_DIRECT while offset and length are aligned,
    /// through the page cache otherwise (and where the filesystem turns
    /// O_DIRECT down for one write with EINVAL).
    private func write(_ job: Job) -> (Int, Failure?) {
        var done = 0
        var directRefused = false
        while done < job.count {
            let at = job.offset + UInt64(done)
            let left = job.count - done
            let aligned = at % UInt64(Self.alignment) == 0 && left % Self.alignment == 0
                && done % Self.alignment == 0
            let fd = aligned && !directRefused ? direct : buffered
            let n = pwrite(fd, job.buffer + done, left, off_t(at))
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EINVAL && fd == direct {
                directRefused = true
                continue
            }
            guard n > 0 else { return (done, ("pwrite", n < 0 ? errno : EIO)) }
            done += n
        }
        return (done, nil)
    }
}
