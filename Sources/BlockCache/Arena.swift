import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The memory of the RAM tier: one private anonymous mapping, cut into
/// `slots` blocks of `blockSize` bytes. Pages are only backed once touched.
/// Owns the mapping; all access goes through `slot(_:)`.
///
/// Anonymous memory advised for huge pages (MADV_HUGEPAGE), not a shared
/// /dev/shm file as at first, because the first touch of each page is what a
/// cold read pays to land its blocks: with huge pages that is one fault per
/// 2 MiB instead of one per 4 KiB. Shared memory gets huge pages only where
/// the operator turned on `transparent_hugepage/shmem_enabled` (off by
/// default); anonymous memory wherever `transparent_hugepage/enabled` is
/// `madvise` or `always` (the distributions' defaults; `never` turns this
/// off, and the arena works the same on 4 KiB pages). First fill of 256 MiB
/// of fresh memory on the 16-core GPU node (2026-12-04, `ft.c` in
/// docs/performance.md): /dev/shm 149–226 ms, anonymous 4 KiB pages
/// 131–182, huge pages 59–72, also after 20 s idle. On the 2-core dev VM,
/// whose host takes back memory left free for seconds, huge pages were
/// 4–5x cheaper than /dev/shm right after memory was freed and dearer after
/// 30 s idle (the host backs them again). The shared file's one purpose was
/// to hand the arena's descriptor to clients someday; a client mapping the
/// arena could read every model in it, whatever `access` allows, so it was
/// never going to be the zero-copy path (`open` passes a staged file's
/// descriptor instead).
final class Arena: @unchecked Sendable {
    let blockSize: Int
    let slots: Int
    private let base: UnsafeMutableRawPointer
    /// The whole mapping, `base` rounded down to its start.
    private let mapping: (start: UnsafeMutableRawPointer, length: Int)

    /// `hugePages`: advise the kernel to back the arena with huge pages
    /// (`ramCache.pages`: `huge`); false leaves it on 4 KiB pages (`small`).
    init(budgetBytes: UInt64, blockSize: Int, hugePages: Bool = true) throws(CacheError) {
        let slots = Int(budgetBytes / UInt64(blockSize))
        guard slots > 0 else { throw .configuration("ramCache.budgetBytes is smaller than one block (\(blockSize) bytes)") }
        let size = slots * blockSize
        // Mapped one huge page longer, so that the slots can start on a huge
        // page boundary (kernels before 6.7 do not align anonymous mappings):
        // a 4 MiB block then covers exactly two huge pages.
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
        let misalignment = Int(bitPattern: memory) % Self.hugePage
        let base = memory + (misalignment == 0 ? 0 : Self.hugePage - misalignment)
        // Only advice: without transparent huge pages the arena works the same
        // on 4 KiB pages. MADV_NOHUGEPAGE for `small`, so that THP `always`
        // does not give it huge pages anyway.
        _ = madvise(base, size, hugePages ? MADV_HUGEPAGE : MADV_NOHUGEPAGE)
        self.blockSize = blockSize
        self.slots = slots
        self.base = base
        self.mapping = (memory, length)
    }

    deinit {
        munmap(mapping.start, mapping.length)
    }

    /// The memory of slot `index`: valid while the arena lives; the cache's
    /// slot states say who may write or read it.
    func slot(_ index: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: base + index * blockSize, count: blockSize)
    }

    /// The x86-64 and arm64 (4 KiB base pages) PMD size.
    private static let hugePage = 2 << 20
}
