import CFileSystem
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The memory of the RAM tier: one private anonymous mapping, cut into
/// `slots` blocks of `blockSize` bytes. Pages are only backed once touched.
/// Owns the mapping; all access goes through `slot(_:)`.
///
/// Anonymous memory, not a shared /dev/shm file as at first, because the
/// first touch of each page is what a cold read pays to land its blocks, and
/// a fault on shared memory costs more (a page-cache insert, accounting, a
/// dirty-page check): in a fresh daemon's cold read-through those faults were
/// nearly half of its CPU (perf, 2026-12-04). First fill of 2 GiB
/// (`Benchmarks/first-touch.sh`): on the 16-core GPU node 1.08–1.29 s in
/// anonymous 4 KiB pages against 1.33–1.61 in /dev/shm, on the 2-core dev VM
/// 0.98–1.30 against 1.43–1.60. The shared file's one purpose was to hand
/// the arena's descriptor to clients someday; a client mapping the arena
/// could read every model in it, whatever `access` allows, so it was never
/// going to be the zero-copy path (`open` passes a staged file's descriptor).
///
/// Huge pages (`ramCache.pages: huge`, MADV_HUGEPAGE) make a fill one fault
/// per 2 MiB. Where the host backs guest memory promptly they halve its cost
/// (GPU node, 2 GiB: 0.52–0.62 s, idle or not); where it takes free memory
/// back and is slow to return it they multiply it (dev VM: 2.1–5.3 s). Not
/// the default, then: the operator measures and opts in.
///
/// Whatever the pages, a slot's first fill backs them in one call
/// (`prepare`) rather than one page fault at a time as the copy reaches
/// them.
final class Arena: @unchecked Sendable {
    let blockSize: Int
    let slots: Int
    private let base: UnsafeMutableRawPointer
    private struct Backing {
        /// Leading bytes of each slot known backed (whole pages).
        var bytes: [Int]
        /// False once the kernel has said it has no MADV_POPULATE_WRITE.
        var populate = true
    }
    private let backing: Mutex<Backing>
    private static let page = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// `hugePages`: advise the kernel to back the arena with huge pages
    /// (`ramCache.pages`: `huge`); false leaves it on 4 KiB pages (`small`).
    init(budgetBytes: UInt64, blockSize: Int, hugePages: Bool = false) throws(CacheError) {
        let slots = Int(budgetBytes / UInt64(blockSize))
        guard slots > 0 else { throw .configuration("ramCache.budgetBytes is smaller than one block (\(blockSize) bytes)") }
        let (size, overflow) = slots.multipliedReportingOverflow(by: blockSize)
        guard !overflow, size <= Int.max - Self.hugePage else {
            throw .configuration("ramCache.budgetBytes (\(budgetBytes) bytes) is larger than any address space")
        }
        // Mapped one huge page longer, so that the slots can start on a huge
        // page boundary (kernels before 6.7 do not align anonymous mappings):
        // a 4 MiB block then covers exactly two huge pages. The slack on
        // either side is unmapped again at once.
        let length = size + Self.hugePage
        // MAP_NORESERVE: the budget is a ceiling, not memory to set aside;
        // untouched slots cost nothing. (Under vm.overcommit_memory=2 the
        // kernel charges the whole budget here all the same, and mmap fails
        // with ENOMEM if it cannot.)
        guard let memory = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
            memory != MAP_FAILED
        else {
            throw .system(syscall: "mmap", path: "ramCache arena (\(size) bytes)", errno: errno)
        }
        let head = (Self.hugePage - Int(bitPattern: memory) % Self.hugePage) % Self.hugePage
        let base = memory + head
        if head > 0 { munmap(memory, head) }
        munmap(base + size, Self.hugePage - head)
        // Only advice: without transparent huge pages the arena works the same
        // on 4 KiB pages. MADV_NOHUGEPAGE for `small`, so that THP `always`
        // does not give it huge pages behind the setting's back.
        _ = madvise(base, size, hugePages ? MADV_HUGEPAGE : MADV_NOHUGEPAGE)
        self.blockSize = blockSize
        self.slots = slots
        self.base = base
        backing = Mutex(Backing(bytes: Array(repeating: 0, count: slots)))
    }

    /// Readies the first `length` bytes of slot `index` to be written: the
    /// pages among them that were never backed are backed now, zeroed, in one
    /// madvise(MADV_POPULATE_WRITE), instead of by one page fault per 4 KiB
    /// page as the block's bytes are copied (or read with O_DIRECT) in. A
    /// fresh daemon's first blocks are all first touches, and on a VM each
    /// fault is an exit to the kernel: filling 256 MiB of fresh 4 KiB pages
    /// took 89-100 ms this way against 112-136 ms by faults on the dev VM,
    /// idle or not (`Benchmarks/first-touch.sh`, results/first-touch-*.txt).
    /// Only the bytes a fill writes, so a small file's block costs its pages,
    /// not the slot's. A slot's later fills cost nothing here. Without the
    /// call (kernels before 5.14) or should it fail, the copy faults the
    /// pages in as it always did.
    func prepare(_ index: Int, length: Int) {
        let wanted = min(blockSize, (length + Self.page - 1) / Self.page * Self.page)
        let from = backing.withLock { $0.populate ? $0.bytes[index] : wanted }
        guard from < wanted else { return }
        if wc_populate_write(base + index * blockSize + from, wanted - from) == 0 {
            backing.withLock { $0.bytes[index] = max($0.bytes[index], wanted) }
        } else if errno == EINVAL {
            backing.withLock { $0.populate = false }
        }
    }

    deinit {
        munmap(base, slots * blockSize)
    }

    /// The memory of slot `index`: valid while the arena lives; the cache's
    /// slot states say who may write or read it.
    func slot(_ index: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: base + index * blockSize, count: blockSize)
    }

    /// The x86-64 and arm64 (4 KiB base pages) PMD size.
    private static let hugePage = 2 << 20
}

extension BlockCache {
    /// The kernel's transparent huge page mode as its sysfs file shows it
    /// (`always [madvise] never`), nil where there is none; and whether that
    /// mode gives huge pages to memory advised for them (`ramCache.pages:
    /// huge`): `madvise` or `always`.
    public static func transparentHugePages() -> (mode: String?, advisedGetThem: Bool) {
        let mode = (try? String(contentsOfFile: "/sys/kernel/mm/transparent_hugepage/enabled", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return (mode, mode.map { $0.contains("[madvise]") || $0.contains("[always]") } ?? false)
    }
}
