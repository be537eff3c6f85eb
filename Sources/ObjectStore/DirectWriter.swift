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
/// stays bounded (one buffer per open stream plus the queue, and one
/// `readSize` buffer for reading parts back). `take` itself
/// never waits: a receiver holding partly filled buffers for several streams
/// must always be able to start another.
///
/// Order: the writes of one `Stream` (one ranged GET) go to one thread and
/// land, and are shown to its observer, front to back. A failed write ends
/// the stream: what follows it is dropped, so what landed is a prefix.
///
/// Writes that are not aligned (a file's last bytes) go through the caller's
/// ordinary descriptor; Linux keeps the two coherent.
public final class DirectWriter: @unchecked Sendable {
    /// Offset, length and memory alignment O_DIRECT needs on any Linux block
    /// device in use (logical blocks of 512 or 4096 bytes).
    public static let alignment = 4096

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
    private var readBuffer: UnsafeMutableRawPointer?  // guarded by readLock
    /// One per buffer that may wait for the disk: `submit` takes one, a finished write gives it back.
    private let credits: DispatchSemaphore
    private let workers: [Worker]
    private struct Buffers {
        var free: [UInt] = []
        var all: [UInt] = []
        var streams = 0
        var closed = false
    }
    private let buffers = Mutex(Buffers())

    /// Opens `path` a second time with O_DIRECT, beside `buffered` (the
    /// caller's descriptor, which stays the caller's). Nil where the
    /// filesystem refuses O_DIRECT (tmpfs before Linux 6.6, some FUSE and
    /// network filesystems): the caller then writes as before.
    public init?(
        path: String, buffered: Int32, bufferSize: Int = 1 << 20, maxQueued: Int = 8, threads: Int = 4,
        readSize: Int = 8 << 20
    ) {
        precondition(bufferSize > 0 && bufferSize % Self.alignment == 0 && maxQueued > 0 && threads > 0)
        precondition(readSize > 0 && readSize % Self.alignment == 0)
        let fd = open(path, O_RDWR | O_CLOEXEC | Self.oDirect)
        guard fd >= 0 else { return nil }
        self.path = path
        self.direct = fd
        self.buffered = buffered
        self.bufferSize = bufferSize
        self.readSize = readSize
        self.credits = DispatchSemaphore(value: maxQueued)
        self.workers = (0..<threads).map { _ in Worker() }
        // The threads hold the writer until `close` stops them.
        for worker in workers {
            let thread = Thread { [self] in work(worker) }
            thread.name = "weightcache-direct-write"
            thread.start()
        }
    }

    /// Waits for the queued writes, stops the threads and frees the buffers.
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
        let all = buffers.withLock { state in
            defer { state.all = []; state.free = [] }
            return state.all
        }
        for address in all { UnsafeMutableRawPointer(bitPattern: address)!.deallocate() }
        readLock.lock()
        readBuffer?.deallocate()
        readBuffer = nil
        readLock.unlock()
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
        let reused = buffers.withLock { $0.free.popLast() }
        if let reused { return UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: reused), count: bufferSize) }
        let fresh = UnsafeMutableRawPointer.allocate(byteCount: bufferSize, alignment: Self.alignment)
        buffers.withLock { $0.all.append(UInt(bitPattern: fresh)) }
        return UnsafeMutableRawBufferPointer(start: fresh, count: bufferSize)
    }

    /// Returns a buffer from `take` unused.
    public func giveBack(_ buffer: UnsafeMutableRawBufferPointer) {
        let address = UInt(bitPattern: buffer.baseAddress!)
        buffers.withLock { $0.free.append(address) }
    }

    /// Queues the first `count` bytes of `buffer` (from `take`) to be written
    /// at `offset`; waits while `maxQueued` buffers wait for the disk. The
    /// buffer is the writer's again afterwards. Dropped when the stream has
    /// failed already.
    public func submit(_ stream: Stream, _ buffer: UnsafeMutableRawBufferPointer, count: Int, at offset: UInt64) {
        let failed = stream.state.withLock { $0.failure != nil }
        guard !failed, count > 0 else { return giveBack(buffer) }
        credits.wait()
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

    /// Reads `range` of the file with O_DIRECT, up to `readSize` bytes per
    /// pread (one large read lets the block layer run its pieces in
    /// parallel; 1 MiB reads one after another were the slow part of a
    /// pull's whole-file check), and runs `body` on each piece in order: the
    /// bytes the writes put on disk, without bringing them into the page
    /// cache. False, having run `body` on nothing, when `range` does not
    /// start on an aligned offset; throws the errno of a failed read.
    public func read(_ range: Range<UInt64>, _ body: (UnsafeRawBufferPointer) -> Void) throws(ObjectStoreError) -> Bool {
        guard range.lowerBound % UInt64(Self.alignment) == 0 else { return false }
        readLock.lock()
        defer { readLock.unlock() }
        let buffer = readBuffer ?? .allocate(byteCount: readSize, alignment: Self.alignment)
        readBuffer = buffer
        var position = range.lowerBound
        while position < range.upperBound {
            let want = Int(min(UInt64(readSize), range.upperBound - position))
            // Whole aligned blocks: past the end of the file the read comes back short.
            let asked = (want + Self.alignment - 1) / Self.alignment * Self.alignment
            var got = 0
            var directRefused = false
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
        return true
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
            buffers.withLock { $0.free.append(address) }
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
