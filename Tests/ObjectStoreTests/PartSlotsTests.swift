// The shared cap on parts in flight across the files of one pull.
import Synchronization
import XCTest

@testable import ObjectStore

final class PartSlotsTests: XCTestCase {
    /// Order in which waiters got their slot.
    final class Order: Sendable {
        let values = Mutex<[Int]>([])
        func add(_ value: Int) { values.withLock { $0.append(value) } }
        var all: [Int] { values.withLock { $0 } }
    }

    final class Counters: Sendable {
        let state = Mutex((now: 0, peak: 0))
        func enter() { state.withLock { $0.now += 1; $0.peak = max($0.peak, $0.now) } }
        func leave() { state.withLock { $0.now -= 1 } }
        var peak: Int { state.withLock { $0.peak } }
    }

    func testWaitersAreServedByPriorityThenArrival() async throws {
        let slots = PartSlots(1)
        try await slots.acquire(priority: 0)  // held: everyone below waits
        let order = Order()
        var tasks: [Task<Void, any Error>] = []
        for (index, priority) in [3, 1, 2, 1].enumerated() {
            tasks.append(Task {
                try await slots.acquire(priority: priority)
                order.add(index)
                slots.release()
            })
            try await Task.sleep(for: .milliseconds(50))  // arrive in this order
        }
        slots.release()
        for task in tasks { try await task.value }
        XCTAssertEqual(order.all, [1, 3, 2, 0], "priority 1 (first come first), then 2, then 3")
    }

    func testNeverMoreThanTheCapInFlightAndCancelledWaitersLeave() async throws {
        let slots = PartSlots(3)
        let counters = Counters()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<24 {
                group.addTask {
                    try await slots.acquire(priority: i % 4)
                    counters.enter()
                    try await Task.sleep(for: .milliseconds(5))
                    counters.leave()
                    slots.release()
                }
            }
            try await group.waitForAll()
        }
        XCTAssertEqual(counters.peak, 3)

        try await slots.acquire(priority: 0)
        try await slots.acquire(priority: 0)
        try await slots.acquire(priority: 0)
        let waiting = Task { try await slots.acquire(priority: 0) }
        try await Task.sleep(for: .milliseconds(50))
        waiting.cancel()
        do {
            try await waiting.value
            XCTFail("a cancelled waiter got a slot")
        } catch is CancellationError {}
        for _ in 0..<3 { slots.release() }
        // All three slots are back (the cancelled waiter took none).
        for _ in 0..<3 { try await slots.acquire(priority: 0) }
    }
}
