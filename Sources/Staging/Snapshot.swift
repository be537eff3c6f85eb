import Foundation
import Integrity
import Models

#if canImport(Glibc)
import Glibc
#endif

/// A model revision as a folder of relative symlinks into `blobs/`, with the
/// model's own file names: what `weightcache path` prints and what vLLM,
/// transformers or safetensors load as they would a download folder.
struct SnapshotWriter: Sendable {
    let layout: StagingLayout

    /// The snapshot id: xxh3-128 over the sorted (path, digest) pairs, so the
    /// same content always lands in the same folder and a changed revision in a
    /// new one (the ref flips atomically between them).
    static func id(_ files: [(path: String, digest: String)]) -> String {
        let text = files.sorted { $0.path < $1.path }.map { "\($0.path)\t\($0.digest)\n" }.joined()
        return Digest128.of(Array(text.utf8)).description
    }

    /// Builds the snapshot beside its final name, renames it into place, then
    /// points `@refs/<revision>` at it. Returns the snapshot's path.
    func write(_ reference: ModelReference, files: [(path: String, digest: String)]) throws(StagingError) -> String {
        let id = Self.id(files)
        let snapshots = layout.snapshots(reference.name)
        let final = snapshots + "/" + id
        try makeDirectory(snapshots)
        if !fileExists(final) {
            let temporary = snapshots + "/.tmp-\(UUID().uuidString)"
            do {
                for file in files {
                    let link = temporary + "/" + file.path
                    try makeDirectory((link as NSString).deletingLastPathComponent)
                    // From the link's folder up to the staging root, then into blobs/.
                    let depth = (link.dropFirst(layout.root.count + 1)).split(separator: "/").count - 1
                    let target = String(repeating: "../", count: depth) + "blobs/" + file.digest
                    guard symlink(target, link) == 0 else {
                        throw StagingError.localIO(syscall: "symlink", path: link, errno: errno)
                    }
                }
                try makeDirectory(temporary)  // a model of no files is still a folder
                if rename(temporary, final) != 0 && errno != EEXIST && errno != ENOTEMPTY {
                    throw StagingError.localIO(syscall: "rename", path: final, errno: errno)
                }
            } catch {
                try? FileManager.default.removeItem(atPath: temporary)
                throw error as! StagingError
            }
            try? FileManager.default.removeItem(atPath: temporary)  // lost a race to an identical twin
        }
        let refs = layout.refs(reference.name)
        try makeDirectory(refs)
        let pending = refs + "/.tmp-\(UUID().uuidString)"
        guard FileManager.default.createFile(atPath: pending, contents: Data(id.utf8)) else {
            throw .localIO(syscall: "create", path: pending, errno: errno)
        }
        guard rename(pending, refs + "/" + reference.revision) == 0 else {
            let e = errno
            unlink(pending)
            throw .localIO(syscall: "rename", path: refs + "/" + reference.revision, errno: e)
        }
        syncDirectory(refs)
        return final
    }

    /// The snapshot folder a revision points at, if it was pulled here.
    func path(of reference: ModelReference) throws(StagingError) -> String {
        let ref = layout.refs(reference.name) + "/" + reference.revision
        guard let data = FileManager.default.contents(atPath: ref),
            let id = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines),
            Digest128(hex: id) != nil, fileExists(layout.snapshots(reference.name) + "/" + id)
        else { throw .notStaged(model: reference.description) }
        let snapshot = layout.snapshots(reference.name) + "/" + id
        // A blob quarantined since the pull leaves a dangling link: not whole any more.
        if let walker = FileManager.default.enumerator(atPath: snapshot) {
            while let relative = walker.nextObject() as? String {
                if walker.fileAttributes?[.type] as? FileAttributeType == .typeSymbolicLink,
                    !fileExists(snapshot + "/" + relative)
                {
                    throw .notStaged(model: reference.description)
                }
            }
        }
        return snapshot
    }
}
