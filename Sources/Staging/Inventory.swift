import Foundation
import Integrity
import Logging
import Models

#if canImport(Glibc)
import Glibc
#endif

// What staging holds, read from the folders themselves (no index to drift
// from them): staged models and their files, per-blob state, usage, and
// explicit eviction of one model. The daemon answers `resolve`, `list` and
// `stats` from here, so a staged model is served even when the store is down.

extension Staging {
    /// One file of a staged snapshot.
    public struct StagedFile: Sendable, Equatable {
        public var path: String
        public var digest: String
        public var size: UInt64
    }

    /// Where a blob stands on NVMe.
    public enum BlobState: Sendable, Equatable {
        case absent, partial, staged
    }

    /// The files of a staged revision (from its snapshot's links); `notStaged`
    /// if it was not pulled here or lost a blob since.
    public func stagedFiles(of reference: ModelReference) throws(StagingError) -> [StagedFile] {
        let snapshot = try path(of: reference)
        var files: [StagedFile] = []
        guard let walker = FileManager.default.enumerator(atPath: snapshot) else { return files }
        while let relative = walker.nextObject() as? String {
            guard walker.fileAttributes?[.type] as? FileAttributeType == .typeSymbolicLink,
                let target = try? FileManager.default.destinationOfSymbolicLink(atPath: snapshot + "/" + relative)
            else { continue }
            let digest = (target as NSString).lastPathComponent
            // A link swapped to point anywhere but a blob is not a file of the model.
            guard Digest128(hex: digest) != nil, target.hasSuffix("blobs/" + digest) else {
                throw .notStaged(model: reference.description)
            }
            var info = stat()
            guard stat(layout.blob(digest), &info) == 0 else { throw .notStaged(model: reference.description) }
            files.append(StagedFile(path: relative, digest: digest, size: UInt64(info.st_size)))
        }
        return files.sorted { $0.path < $1.path }
    }

    /// Every revision with a ref here (staged whole or not: `stagedFiles` says).
    public func stagedModels() -> [ModelReference] {
        let models = layout.root + "/models"
        var found: [ModelReference] = []
        guard let walker = FileManager.default.enumerator(atPath: models) else { return found }
        while let relative = walker.nextObject() as? String {
            let name = (relative as NSString).lastPathComponent
            guard name.hasPrefix("@") else { continue }
            walker.skipDescendants()
            guard name == "@refs" else { continue }
            let model = (relative as NSString).deletingLastPathComponent
            for revision in (try? FileManager.default.contentsOfDirectory(atPath: models + "/" + relative)) ?? []
            where !revision.hasPrefix(".") {
                if let reference = try? ModelReference(name: model, revision: revision) { found.append(reference) }
            }
        }
        return found.sorted { $0.description < $1.description }
    }

    /// Blobs this process evicted from staging (to make room, or asked to).
    public var evictedBlobs: Int { puller.evictions?.value ?? 0 }

    /// The limits this staging directory keeps to.
    public var budget: StagingBudget { puller.budget }

    public func isPinned(_ reference: ModelReference) -> Bool {
        fileExists(layout.pins(reference.name) + "/" + reference.revision)
    }

    /// A blob named by its xxh3-128: staged, being downloaded (a partial), or absent.
    public func state(ofBlob digest: String) -> BlobState {
        if fileExists(layout.blob(digest)) { return .staged }
        return fileExists(layout.partial(digest)) ? .partial : .absent
    }

    /// Blobs and the bytes they hold, plus partials' allocated bytes.
    public func usage() -> (blobs: Int, blobBytes: UInt64, partialBytes: UInt64) {
        let evictor = Evictor(layout: layout, budget: puller.budget, logger: puller.logger, freeSpace: puller.freeSpace)
        let blobs = evictor.listBlobs()
        return (blobs.count, blobs.reduce(0) { $0 + $1.size }, evictor.partialBytes())
    }

    /// Removes a revision from staging: its ref, its snapshot (unless another
    /// ref points at it) and its blobs that no other snapshot links. A pinned
    /// revision is refused (`pinned`); open readers keep their descriptors'
    /// data (POSIX). Returns the blobs removed.
    @discardableResult
    public func evict(_ reference: ModelReference) throws(StagingError) -> [String] {
        guard !isPinned(reference) else { throw .pinned(model: reference.description) }
        let files = (try? stagedFiles(of: reference)) ?? []
        let ref = layout.refs(reference.name) + "/" + reference.revision
        guard let id = try? String(contentsOfFile: ref, encoding: .utf8) else { throw .notStaged(model: reference.description) }
        guard unlink(ref) == 0 else { throw .localIO(syscall: "unlink", path: ref, errno: errno) }
        let stillReferenced = linkedBlobs()
        var removed: [String] = []
        for file in files where !stillReferenced.contains(file.digest) {
            guard let lock = BlobLock.tryAcquire(layout.lock(file.digest)) else { continue }
            defer { withExtendedLifetime(lock) {} }
            if unlink(layout.blob(file.digest)) == 0 {
                unlink(layout.blockDigests(file.digest))
                UnsyncedMarkers(layout: layout).clear(file.digest)
                removed.append(file.digest)
            }
        }
        let snapshotID = id.trimmingCharacters(in: .whitespacesAndNewlines)
        if !refIDs(of: reference.name).contains(snapshotID) {
            try? FileManager.default.removeItem(atPath: layout.snapshots(reference.name) + "/" + snapshotID)
        }
        puller.evictions?.add(removed.count)
        puller.logger.notice("evicted \(reference) from staging: \(removed.count) blob(s) removed")
        return removed
    }

    /// Snapshot ids the refs of `name` point at.
    private func refIDs(of name: String) -> Set<String> {
        let refs = layout.refs(name)
        let revisions = (try? FileManager.default.contentsOfDirectory(atPath: refs)) ?? []
        return Set(revisions.compactMap {
            (try? String(contentsOfFile: refs + "/" + $0, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        })
    }

    /// Blobs linked from the snapshot of any ref.
    private func linkedBlobs() -> Set<String> {
        var linked = Set<String>()
        for reference in stagedModels() {
            for file in (try? stagedFiles(of: reference)) ?? [] { linked.insert(file.digest) }
        }
        return linked
    }
}
