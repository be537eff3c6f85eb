import Foundation

/// Plain threads for work that blocks: at most `width` at a time, started in
/// the order it was handed in. The daemon's pipelined requests and preloads
/// run on one set, the cache's read-ahead on others.
///
/// Not Dispatch: on Linux, Dispatch's concurrent queues and Swift
/// concurrency's global executor draw on one pool sized to the cores, and work
/// blocked in it starved the very tasks it waited for (the S3 transfers of a
/// read-through, the pull's parts). Measured: a pipelined read of a cold 125
/// MiB tensor took 15 s, and stalled the pull beside it, instead of the 1.4 s
/// of the same read one request at a time.
///
/// Threads are started as work arrives, up to `width`, and end after
/// `idleExit` with nothing to do.
public final class BlockingThreads: @unchecked Sendable {
    public let width: Int
    private let name: String
    private let idleExit: TimeInterval
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var queue: [@Sendable () -> Void] = []
    private var head = 0
    private var threads = 0
    private var idle = 0

    public init(width: Int, name: String, idleExit: TimeInterval = 10) {
        self.width = max(1, width)
        self.name = name
        self.idleExit = idleExit
    }

    /// Queues `work` behind what is already waiting.
    public func async(_ work: @escaping @Sendable () -> Void) { submit([work]) }

    /// Queues every piece of `work`, in order, behind what is already waiting.
    public func submit(_ work: [@Sendable () -> Void]) {
        guard !work.isEmpty else { return }
        condition.lock()
        queue += work
        var start = 0
        while threads < width && idle + start < queue.count - head {
            threads += 1
            start += 1
        }
        condition.broadcast()
        condition.unlock()
        for _ in 0..<start {
            let thread = Thread { [self] in run() }
            thread.name = name
            thread.start()
        }
    }

    private func run() {
        while true {
            condition.lock()
            idle += 1
            while head == queue.count {
                if !condition.wait(until: Date(timeIntervalSinceNow: idleExit)) && head == queue.count {
                    idle -= 1
                    threads -= 1
                    condition.unlock()
                    return
                }
            }
            idle -= 1
            let work = queue[head]
            head += 1
            if head == queue.count {
                queue.removeAll(keepingCapacity: true)
                head = 0
            }
            condition.unlock()
            work()
        }
    }
}
