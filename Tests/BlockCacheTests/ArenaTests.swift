import Foundation
import XCTest

@testable import BlockCache

final class ArenaTests: XCTestCase {
    /// Slots start on huge-page boundaries, so that a block covers whole huge
    /// pages, and each slot is its own memory.
    func testSlotsAreHugePageAlignedAndSeparate() throws {
        let blockSize = 4 << 20
        let arena = try Arena(budgetBytes: UInt64(4 * blockSize), blockSize: blockSize)
        XCTAssertEqual(arena.slots, 4)
        for index in 0..<arena.slots {
            let slot = arena.slot(index)
            XCTAssertEqual(slot.count, blockSize)
            XCTAssertEqual(Int(bitPattern: slot.baseAddress) % (2 << 20), 0, "slot \(index) is not on a 2 MiB boundary")
            slot.initializeMemory(as: UInt8.self, repeating: UInt8(index + 1))
        }
        for index in 0..<arena.slots {
            let slot = UnsafeRawBufferPointer(arena.slot(index))
            XCTAssertEqual(slot.first, UInt8(index + 1))
            XCTAssertEqual(slot.last, UInt8(index + 1))
        }
    }

    /// The budget is a ceiling: a large arena costs no memory until its slots
    /// are filled, and then about what was filled.
    func testMemoryIsOnlyUsedAsSlotsFill() throws {
        let blockSize = 4 << 20
        let before = try residentBytes()
        let arena = try Arena(budgetBytes: 8 << 30, blockSize: blockSize)
        let created = try residentBytes()
        XCTAssertLessThan(created - before, 16 << 20, "an 8 GiB arena took memory before any slot was filled")
        for index in 0..<8 { arena.slot(index).initializeMemory(as: UInt8.self, repeating: 7) }
        let filled = try residentBytes()
        XCTAssertGreaterThanOrEqual(filled - created, 28 << 20, "32 MiB of filled slots are not resident")
        XCTAssertLessThan(filled - created, 48 << 20)
    }

    /// A budget below one block is a configuration error, not an empty arena.
    func testBudgetBelowOneBlockIsRejected() {
        XCTAssertThrowsError(try Arena(budgetBytes: 1 << 20, blockSize: 4 << 20)) { error in
            guard case CacheError.configuration = error else { return XCTFail("\(error)") }
        }
    }

    private func residentBytes() throws -> Int {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])
        else { throw CocoaError(.fileReadCorruptFile) }
        return kib * 1024
    }
}
