import Foundation

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
/// costs about 7 s per GiB: a buffered 2 GiB pull used 2 to 17 CPU-seconds
/// depending on the minute, the same pull through this writer 2.1 every time.
/// With O_DIRECT the disk reads from a few aligned buffers that are reused
/// for the whole file, so a pull touches no new memory, and leaves the page
/// cache to the readers.
///
/// Why threads: an O_DIRECT write returns once the disk has the bytes. Done
/// on the thread that receives (one for every transfer of the process), it
/// would stall every connection. So the receiver fills a buffer (`take`),
/// hands it over (`submit`), and takes the next; when `maxQueued` buffers wait
/// for the disk, `take` waits too: the disk paces the download, and memory
/// stays bounded (one buffer per open stream plus the queue).
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

    /// One ranged GET's writes. Its fields belong to the writer's lock.
    public final class Stream: @unchecked Sendable {
        fileprivate let observer: (any WriteObserver)?
        fileprivate let progress: ProgressHandler?
        fileprivate let thread: Int
        fileprivate var queued = 0
        fileprivate var landed: UInt64 = 0
        fileprivate var failure: (syscall: String, errno: Int32)?
        fileprivate var drained: (() -> Void)?

        fileprivate init(observer: (any WriteObserver)?, progress: ProgressHandler?, thread: Int) {
            self.observer = observer
            self.progress = progress
            self.thread = thread
        }
    }

    private struct Job {
        var stream: Stream
        var buffer: UnsafeMutableRawPointer
        var count: Int
        var offset: UInt64
    }

    public let path: String
    public let bufferSize: Int
    private let direct: Int32
    private let buffered: Int32
    private let maxQueued: Int
    private let lock = NSCondition()
    // Guarded by `lock`:
    private var free: [UnsafeMutableRawPointer] = []
    private var allBuffers: [UnsafeMutableRawPointer] = []
    private var queues: [[Job]]
    private var queuedTotal = 0
    private var streams = 0
    private var closing = false
    private var running: Int

    /// Opens `path` a second time with O_DIRECT, beside `buffered` (the
    /// caller's descriptor, which stays the caller's). Nil where the
    /// filesystem refuses O_DIRECT (tmpfs before Linux 6.6, some FUSE and
    /// network filesystems): the caller then writes as before.
    public init?(path: String, buffered: Int32, bufferSize: Int = 1 << 20, maxQueued: Int = 8, threads: Int = 4) {
        precondition(bufferSize > 0 && bufferSize % Self.alignment == 0 && maxQueued > 0 && threads > 0)
        let fd = open(path, O_RDWR | O_CLOEXEC | Self.oDirect)
        guard fd >= 0 else { return nil }
        self.path = path
        self.direct = fd
        self.buffered = buffered
        self.bufferSize = bufferSize
        self.maxQueued = maxQueued
        self.queues = Array(repeating: [], count: threads)
        self.running = threads
        // The threads hold the writer until `close` stops them.
        for index in 0..<threads {
            let thread = Thread { [self] in work(index) }
            thread.name = "weightcache-direct-write"
            thread.start()
        }
    }

    /// Glibc leaves O_DIRECT out of Swift's view (it needs _GNU_SOURCE).
    /// Its value on x86-64 and arm64 Linux.
    public static var oDirect: Int32 {
        #if arch(arm64)
        0o200000
        #else
        0o40000
        #endif
    }

    /// Waits for the queued writes, stops the threads and frees the buffers.
    /// The owner must call it (the threads keep the writer alive until then),
    /// once every stream has drained; later calls do nothing.
    public func close() {
        lock.lock()
        guard !closing else {
            lock.unlock()
            return
        }
        closing = true
        lock.broadcast()
        while running > 0 { lock.wait() }
        let buffers = allBuffers
        allBuffers = []
        free = []
        lock.unlock()
        for buffer in buffers { buffer.deallocate() }
        Glibc.close(direct)
    }

    /// A stream for one ranged GET: `observer` sees what lands, in order,
    /// and `progress` hears of it, both on a writer thread.
    public func makeStream(observer: (any WriteObserver)?, progress: ProgressHandler?) -> Stream {
        lock.lock()
        defer { lock.unlock() }
        streams += 1
        return Stream(observer: observer, progress: progress, thread: streams % queues.count)
    }

    /// An aligned buffer of `bufferSize` bytes to fill and `submit` (or `giveBack`).
    /// Waits while `maxQueued` buffers wait for the disk.
    public func take() -> UnsafeMutableRawBufferPointer {
        lock.lock()
        while queuedTotal >= maxQueued && !closing { lock.wait() }
        let buffer: UnsafeMutableRawPointer
        if let reused = free.popLast() {
            buffer = reused
        } else {
            buffer = .allocate(byteCount: bufferSize, alignment: Self.alignment)
            allBuffers.append(buffer)
        }
        lock.unlock()
        return UnsafeMutableRawBufferPointer(start: buffer, count: bufferSize)
    }

    /// Returns a buffer from `take` unused.
    public func giveBack(_ buffer: UnsafeMutableRawBufferPointer) {
        lock.lock()
        free.append(buffer.baseAddress!)
        lock.unlock()
    }

    /// Queues the first `count` bytes of `buffer` (from `take`) to be written
    /// at `offset`. The buffer is the writer's again afterwards. Dropped when
    /// the stream has failed already.
    public func submit(_ stream: Stream, _ buffer: UnsafeMutableRawBufferPointer, count: Int, at offset: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        guard stream.failure == nil, count > 0 else {
            free.append(buffer.baseAddress!)
            return
        }
        queues[stream.thread].append(Job(stream: stream, buffer: buffer.baseAddress!, count: count, offset: offset))
        stream.queued += 1
        queuedTotal += 1
        lock.broadcast()
    }

    /// The stream's first failed write, if any: the receiver stops early.
    public func failure(of stream: Stream) -> (syscall: String, errno: Int32)? {
        lock.lock()
        defer { lock.unlock() }
        return stream.failure
    }

    /// Runs `body` with the bytes that landed and the failure, if any, once
    /// every write queued for `stream` is done: now, or on a writer thread.
    public func whenDrained(
        _ stream: Stream, _ body: @escaping @Sendable (UInt64, (syscall: String, errno: Int32)?) -> Void
    ) {
        lock.lock()
        if stream.queued == 0 {
            let (landed, failure) = (stream.landed, stream.failure)
            lock.unlock()
            body(landed, failure)
            return
        }
        stream.drained = { body(stream.landed, stream.failure) }  // a cycle until it runs
        lock.unlock()
    }

    /// Reads `range` of the file with O_DIRECT, `bufferSize` bytes at a time,
    /// and runs `body` on each piece in order: bytes the writes put on disk,
    /// without bringing them into the page cache. False, having run `body`
    /// on nothing, when `range` does not start on an aligned offset; throws
    /// the errno of a failed read.
    public func read(_ range: Range<UInt64>, _ body: (UnsafeRawBufferPointer) -> Void) throws(ObjectStoreError) -> Bool {
        guard range.lowerBound % UInt64(Self.alignment) == 0 else { return false }
        let buffer = take()
        defer { giveBack(buffer) }
        var position = range.lowerBound
        while position < range.upperBound {
            let want = Int(min(UInt64(bufferSize), range.upperBound - position))
            // Whole aligned blocks: past the end of the file the read comes back short.
            let asked = (want + Self.alignment - 1) / Self.alignment * Self.alignment
            var got = 0
            while got < want {
                let n = pread(direct, buffer.baseAddress! + got, asked - got, off_t(position) + off_t(got))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw .localIO(syscall: "pread", path: path, errno: n < 0 ? errno : EIO) }
                got += n
                // A short read that leaves us unaligned: finish through the page cache.
                if got < want && got % Self.alignment != 0 {
                    let m = pread(buffered, buffer.baseAddress! + got, want - got, off_t(position) + off_t(got))
                    guard m > 0 else { throw .localIO(syscall: "pread", path: path, errno: m < 0 ? errno : EIO) }
                    got += m
                }
            }
            body(UnsafeRawBufferPointer(start: buffer.baseAddress!, count: want))
            position += UInt64(want)
        }
        return true
    }

    private func work(_ index: Int) {
        while true {
            lock.lock()
            while queues[index].isEmpty && !closing { lock.wait() }
            guard !queues[index].isEmpty else {
                running -= 1
                lock.broadcast()
                lock.unlock()
                return
            }
            let job = queues[index].removeFirst()
            let skip = job.stream.failure != nil
            lock.unlock()

            var done = 0
            var failure: (syscall: String, errno: Int32)?
            if !skip { (done, failure) = write(job) }
            if done > 0 {
                let bytes = UnsafeRawBufferPointer(start: job.buffer, count: done)
                job.stream.observer?.wrote(bytes, at: job.offset)
                job.stream.progress?(Int64(done))
            }

            lock.lock()
            let stream = job.stream
            stream.landed += UInt64(done)
            if stream.failure == nil, let failure { stream.failure = failure }
            free.append(job.buffer)
            stream.queued -= 1
            queuedTotal -= 1
            var drained: (() -> Void)?
            if stream.queued == 0 { swap(&drained, &stream.drained) }
            lock.broadcast()
            lock.unlock()
            drained?()
        }
    }

    /// pwrite until done: O_DIRECT while offset and length are aligned,
    /// through the page cache otherwise (and where the filesystem turns
    /// O_DIRECT down for one write with EINVAL).
    private func write(_ job: Job) -> (Int, (syscall: String, errno: Int32)?) {
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
