import Foundation

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
final class Arena: @unchecked Sendable {
    let blockSize: Int
    let slots: Int
    private let base: UnsafeMutableRawPointer

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
