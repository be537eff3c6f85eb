import Foundation

/// Plain threads for requests that may block: pipelined reads (which can
/// wait on the store), preloads (which wait on a pull).
///
/// Not a Dispatch queue: on Linux, Dispatch's concurrent queues and Swift
/// concurrency's global executor draw on one pool sized to the cores, and
/// requests blocked in it starved the very tasks they waited for (the S3
/// transfers of a read-through, the pull's parts). Measured: a pipelined read
/// of a cold 125 MiB tensor took 15 s, and stalled the pull beside it, instead
/// of the 1.4 s of the same read one request at a time.
///
/// Threads are started as work arrives, up to `maximum`, and stay; work beyond
/// that waits its turn in order.
final class WorkerThreads: @unchecked Sendable {
    private let maximum: Int
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var queue: [@Sendable () -> Void] = []
    private var threads = 0
    private var idle = 0

    init(maximum: Int) { self.maximum = max(1, maximum) }

    func async(_ work: @escaping @Sendable () -> Void) {
        condition.lock()
        queue.append(work)
        let start = idle == 0 && threads < maximum
        if start { threads += 1 }
        condition.signal()
        condition.unlock()
        if start {
            let thread = Thread { [self] in run() }
            thread.name = "weightcache.worker"
            thread.start()
        }
    }

    private func run() {
        while true {
            condition.lock()
            idle += 1
            while queue.isEmpty { condition.wait() }
            idle -= 1
            let work = queue.removeFirst()
            condition.unlock()
            work()
        }
    }
}
