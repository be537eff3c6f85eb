// Capacity of the staging tier: a byte budget for blobs and partials, and a
// reserve of free space left on the filesystem whatever the budget says. When
// a pull needs room, whole blobs are evicted least-recently-used first (a
// blob's mtime is its last use: pulls touch the blobs they find), skipping
// every blob of a pinned model revision, every blob of the model being pulled
// (evicting its first shard to make room for its last would stage nothing
// whole), and any blob being downloaded. A blob
// open by a reader may be unlinked: the reader's descriptor keeps its data
// valid until closed (POSIX), so eviction never pulls bytes from under a reader.
import Foundation
import Logging
import Synchronization
import Models

#if canImport(Glibc)
import Glibc
#endif

/// The limits `Staging` keeps to.
public struct StagingBudget: Sendable, Equatable {
    /// Most bytes of blobs and partials together.
    public var budgetBytes: UInt64
    /// Free space always left on the staging filesystem.
    public var minFreeBytes: UInt64

    public static let unlimited = StagingBudget(budgetBytes: .max, minFreeBytes: 0)

    public init(budgetBytes: UInt64, minFreeBytes: UInt64) {
        self.budgetBytes = budgetBytes
        self.minFreeBytes = minFreeBytes
    }
}

/// Blobs evicted by this process's pulls and `evict` calls (for stats).
public final class EvictionCounter: Sendable {
    private let count = Atomic<Int>(0)
    public init() {}
    public var value: Int { count.load(ordering: .relaxed) }
    func add(_ n: Int) { count.add(n, ordering: .relaxed) }
}

/// The blobs of the model a pull is staging: never evicted to make room for
/// its other files. Starts with the manifest's digests; a model without one
/// adds each file's digest as the file lands.
final class KeptBlobs: Sendable {
    private let names: Mutex<Set<String>>

    init(_ names: some Sequence<String>) { self.names = Mutex(Set(names)) }

    func insert(_ name: String) { names.withLock { _ = $0.insert(name) } }
    var all: Set<String> { names.withLock { $0 } }
}

/// How many bytes the staging filesystem has free (for non-root writers).
/// `statvfs` in production; tests put a second writer behind it, to fill
/// the disk between the check and the allocation as another process would.
struct FreeSpaceProbe: Sendable {
    let measure: @Sendable (String) -> UInt64

    static let statvfs = FreeSpaceProbe(measure: availableBytes)
}

private func availableBytes(_ path: String) -> UInt64 {
    var info = statvfs()
    guard statvfs(path, &info) == 0 else { return 0 }
    return UInt64(info.f_bavail) * UInt64(info.f_frsize)
}

struct Evictor: Sendable {
    let layout: StagingLayout
    let budget: StagingBudget
    let logger: Logger
    var counter: EvictionCounter? = nil
    var freeSpace: FreeSpaceProbe = .statvfs

    struct Blob {
        var name: String
        var size: UInt64
        var lastUsed: Int
    }

    /// Evicts LRU blobs until `bytes` more fit under the budget and above the
    /// free-space reserve; `alreadyAllocated` is what this file's partial holds
    /// on disk already; `keeping`: blobs of the model being pulled, left alone
    /// like pinned ones. Returns the evicted blob names.
    @discardableResult
    func makeRoom(
        for bytes: UInt64, alreadyAllocated: UInt64, model: String, file: String, keeping: Set<String> = []
    ) throws(StagingError) -> [String] {
        var blobs = listBlobs()
        let partials = partialBytes()
        let pinned = pinnedBlobs()
        var used = blobs.reduce(0) { $0 + $1.size } + partials
        var evicted: [String] = []
        var free = freeBytes()
        func fits() -> Bool {
            let budgetOK = used - min(used, alreadyAllocated) + bytes <= budget.budgetBytes
            let diskOK = free + alreadyAllocated >= bytes + budget.minFreeBytes
            return budgetOK && diskOK
        }
        blobs.sort { ($0.lastUsed, $0.name) < ($1.lastUsed, $1.name) }
        var candidates = blobs.filter { !pinned.contains($0.name) && !keeping.contains($0.name) }[...]
        while !fits() {
            guard let victim = candidates.popFirst() else {
                let own = blobs.filter { keeping.contains($0.name) && !pinned.contains($0.name) }.count
                throw .noSpace(
                    model: model, file: file, needed: bytes,
                    detail: "budget \(budget.budgetBytes) bytes with \(used) in use (\(pinned.count) pinned blob(s), "
                        + "\(own) of this model's own), \(free) bytes free on the filesystem with a reserve of \(budget.minFreeBytes)")
            }
            // A blob being downloaded right now holds its lock: leave it.
            guard let lock = BlobLock.tryAcquire(layout.lock(victim.name)) else { continue }
            defer { withExtendedLifetime(lock) {} }
            guard unlink(layout.blob(victim.name)) == 0 else { continue }
            unlink(layout.blockDigests(victim.name))
            UnsyncedMarkers(layout: layout).clear(victim.name)
            used -= victim.size
            free = freeBytes()
            evicted.append(victim.name)
            counter?.add(1)
            logger.notice(
                "evicted blob \(victim.name) (\(victim.size) bytes) to make room for \(model) \(file)")
        }
        return evicted
    }

    func listBlobs() -> [Blob] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: layout.blobs)) ?? []
        return names.compactMap { name in
            var info = stat()
            guard stat(layout.blob(name), &info) == 0 else { return nil }
            return Blob(name: name, size: UInt64(info.st_size), lastUsed: info.st_mtim.tv_sec * 1_000_000_000 + info.st_mtim.tv_nsec)
        }
    }

    func partialBytes() -> UInt64 {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: layout.partials)) ?? []
        return names.reduce(0) { total, name in
            var info = stat()
            // Allocated blocks, not apparent size: what the partial really takes.
            return stat(layout.partials + "/" + name, &info) == 0 ? total + UInt64(info.st_blocks) * 512 : total
        }
    }

    func freeBytes() -> UInt64 { freeSpace.measure(layout.root) }

    /// Blobs of every pinned revision's snapshot.
    func pinnedBlobs() -> Set<String> {
        var pinned = Set<String>()
        let models = layout.root + "/models"
        guard let walker = FileManager.default.enumerator(atPath: models) else { return pinned }
        while let relative = walker.nextObject() as? String {
            guard (relative as NSString).lastPathComponent == "@pins" else { continue }
            walker.skipDescendants()
            let name = (relative as NSString).deletingLastPathComponent
            for revision in (try? FileManager.default.contentsOfDirectory(atPath: models + "/" + relative)) ?? [] {
                guard let id = try? String(contentsOfFile: layout.refs(name) + "/" + revision, encoding: .utf8) else { continue }
                let snapshot = layout.snapshots(name) + "/" + id.trimmingCharacters(in: .whitespacesAndNewlines)
                guard let links = FileManager.default.enumerator(atPath: snapshot) else { continue }
                while let link = links.nextObject() as? String {
                    if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: snapshot + "/" + link) {
                        pinned.insert((target as NSString).lastPathComponent)
                    }
                }
            }
        }
        return pinned
    }
}

extension Staging {
    /// Pins a pulled revision: none of its blobs is evicted until `unpin`.
    public func pin(_ reference: ModelReference) throws(StagingError) {
        _ = try path(of: reference)  // only what is staged can be pinned
        let pins = layout.pins(reference.name)
        try makeDirectory(pins)
        guard FileManager.default.createFile(atPath: pins + "/" + reference.revision, contents: Data()) else {
            throw .localIO(syscall: "create", path: pins + "/" + reference.revision, errno: errno)
        }
    }

    public func unpin(_ reference: ModelReference) throws(StagingError) {
        let pin = layout.pins(reference.name) + "/" + reference.revision
        if unlink(pin) != 0 && errno != ENOENT { throw .localIO(syscall: "unlink", path: pin, errno: errno) }
    }
}
