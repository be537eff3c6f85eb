import CFileSystem
import Foundation
import TestSupport
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

    /// `prepare` backs the pages a fill will write before it writes them
    /// (one madvise instead of a fault per page), exactly those: a short
    /// block's pages, not its slot's; more of the slot when a longer block
    /// comes; and the memory reads as zeros, as fresh memory does. Skipped on
    /// kernels without MADV_POPULATE_WRITE (before 5.14), where fills fault.
    func testPrepareBacksTheBytesAFillWritesAndNoMore() throws {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let blockSize = 4 << 20
        let arena = try Arena(budgetBytes: UInt64(2 * blockSize), blockSize: blockSize)
        let probe = arena.slot(1).baseAddress!
        try XCTSkipIf(wc_populate_write(probe, page) != 0 && errno == EINVAL, "no MADV_POPULATE_WRITE in this kernel")
        XCTAssertEqual(try Residency.pages(of: arena.slot(0)), 0, "a new slot is backed before any fill")

        arena.prepare(0, length: page + 1)
        XCTAssertEqual(try Residency.pages(of: arena.slot(0)), 2, "a block of a page and a byte: its two pages")
        arena.prepare(0, length: 3 << 20)
        XCTAssertEqual(try Residency.pages(of: arena.slot(0)), (3 << 20) / page)
        arena.prepare(0, length: 1)  // shorter than what is backed: nothing to do, nothing taken back
        XCTAssertEqual(try Residency.pages(of: arena.slot(0)), (3 << 20) / page)
        XCTAssertTrue(UnsafeRawBufferPointer(arena.slot(0))[0..<(3 << 20)].allSatisfy { $0 == 0 })
    }

    /// Where the kernel has transparent huge pages for madvised memory, a
    /// `huge` arena's filled slots are backed by them (the reason for the
    /// arena's kind of memory), and a `small` one's are not. Skipped where THP
    /// is off; a kernel that finds no free huge page falls back to 4 KiB pages,
    /// so the huge case asks for some of the filled bytes, not all.
    func testHugeArenaGetsHugePagesAndSmallDoesNot() throws {
        let thp = BlockCache.transparentHugePages()
        try XCTSkipUnless(thp.advisedGetThem, "transparent huge pages are off here: \(thp.mode ?? "none")")
        let blockSize = 4 << 20
        for huge in [true, false] {
            let before = try anonHugeBytes()
            let arena = try Arena(budgetBytes: UInt64(16 * blockSize), blockSize: blockSize, hugePages: huge)
            for index in 0..<arena.slots { arena.slot(index).initializeMemory(as: UInt8.self, repeating: 1) }
            let gained = try anonHugeBytes() - before
            if huge {
                XCTAssertGreaterThan(gained, 0, "64 MiB filled in a huge arena, none of it in huge pages")
            } else {
                XCTAssertEqual(gained, 0, "a small arena got huge pages")
            }
        }
    }

    /// A budget below one block is a configuration error, not an empty arena;
    /// one beyond any address space too (the byte count would overflow); one
    /// the kernel will not map is its typed mmap error, not a crash.
    func testImpossibleBudgetsAreTypedErrors() {
        XCTAssertThrowsError(try Arena(budgetBytes: 1 << 20, blockSize: 4 << 20)) { error in
            guard case CacheError.configuration = error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try Arena(budgetBytes: .max, blockSize: 64 << 10)) { error in
            guard case CacheError.configuration = error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try Arena(budgetBytes: 1 << 62, blockSize: 4 << 20)) { error in
            guard case CacheError.system(syscall: "mmap", _, ENOMEM) = error else { return XCTFail("\(error)") }
        }
    }

    private func anonHugeBytes() throws -> Int { try kibibytes("AnonHugePages:", in: "/proc/self/smaps_rollup") * 1024 }

    private func residentBytes() throws -> Int { try kibibytes("VmRSS:", in: "/proc/self/status") * 1024 }

    /// The number on a `KEY:   N kB` line of a /proc file.
    private func kibibytes(_ key: String, in file: String) throws -> Int {
        let text = try String(contentsOfFile: file, encoding: .utf8)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(key) }),
            let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])
        else { throw CocoaError(.fileReadCorruptFile) }
        return kib
    }
}
