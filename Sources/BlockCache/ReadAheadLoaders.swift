import Foundation

/// The threads read-ahead loads on: at most `width` loads at a time, started
/// in the order they were asked for.
///
/// Plain threads, started as work arrives, ending after `idleExit` with
/// nothing to do: loads block (pread from
/// NVMe, or a GET from the store that waits on Swift concurrency's transfers),
/// and blocking Dispatch's shared pool on Linux starves those very transfers.
/// NVMe read-ahead needs one stream ahead of a reader (`width` 1); the store
/// needs several requests at once to hide each one's latency.
final class ReadAheadLoaders: @unchecked Sendable {
    let width: Int
    private let name: String
    private let condition = NSCondition()
    // Guarded by `condition`.
    private var queue: [@Sendable () -> Void] = []
    private var head = 0
    private var threads = 0
    private var idle = 0
    private let idleExit: TimeInterval = 10

    init(width: Int, name: String) {
        self.width = max(1, width)
        self.name = name
    }

    /// Queues `loads` behind the ones already waiting.
    func submit(_ loads: [@Sendable () -> Void]) {
        guard !loads.isEmpty else { return }
        condition.lock()
        queue += loads
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
            let load = queue[head]
            head += 1
            if head == queue.count {
                queue.removeAll(keepingCapacity: true)
                head = 0
            }
            condition.unlock()
            load()
        }
    }
}
