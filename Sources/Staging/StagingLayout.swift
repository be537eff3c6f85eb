// Staging: the NVMe tier.
//
// Layout under the staging directory, in the spirit of the Hugging Face cache:
//
//   blobs/<xxh3-128>                      verified content, read-only, shared by every model
//   digests/<xxh3-128>                    its block size and per-block xxh3-64s (for the RAM tier)
//   partials/<id>.partial, <id>.blocks    a download in progress and its block completion map
//   locks/<id>.lock                       flock'd by whoever downloads <id>: one download per blob (unlinked on release)
//   models/<name>/@snapshots/<id>/<path>  relative symlinks to blobs, with the model's own file names
//   models/<name>/@refs/<revision>        the snapshot id a revision points at
//   models/<name>/@pins/<revision>        present while the revision is pinned (never evicted)
//   quarantine/<xxh3-128>.<time>          blobs that failed a check, never served
//
// Only verified, fsynced content is ever renamed into blobs/, and a snapshot is
// built beside its final name and renamed into place, so a reader sees either
// nothing or a complete model. `@` cannot occur in a model name, so a model's
// own folders never collide with another model nested under its name.
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Paths of one staging directory. Pure: creates nothing until `prepare()`.
public struct StagingLayout: Sendable, Equatable {
    public let root: String

    public init(root: String) {
        self.root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
    }

    public var blobs: String { root + "/blobs" }
    public var partials: String { root + "/partials" }
    public var locks: String { root + "/locks" }
    /// Blobs whose content did not match their name, kept for inspection.
    public var quarantine: String { root + "/quarantine" }

    public func blob(_ digest: String) -> String { blobs + "/" + digest }
    /// The xxh3-64 of each block of a blob (`BlockDigestFile`).
    public func blockDigests(_ digest: String) -> String { root + "/digests/" + digest }
    func partial(_ id: String) -> String { partials + "/" + id + ".partial" }
    func blockMap(_ id: String) -> String { partials + "/" + id + ".blocks" }
    func lock(_ id: String) -> String { locks + "/" + id + ".lock" }
    func model(_ name: String) -> String { root + "/models/" + name }
    func snapshots(_ name: String) -> String { model(name) + "/@snapshots" }
    func refs(_ name: String) -> String { model(name) + "/@refs" }
    func pins(_ name: String) -> String { model(name) + "/@pins" }

    /// Creates the fixed folders.
    public func prepare() throws(StagingError) {
        for directory in [blobs, partials, locks, root + "/models", root + "/digests"] {
            try makeDirectory(directory)
        }
    }
}

func makeDirectory(_ path: String) throws(StagingError) {
    do {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    } catch {
        let code = (error as NSError).userInfo[NSUnderlyingErrorKey].flatMap { ($0 as? NSError)?.code } ?? Int(EIO)
        throw .localIO(syscall: "mkdir", path: path, errno: Int32(code))
    }
}

/// fsync of a directory, so that a rename into it survives power loss.
func syncDirectory(_ path: String) {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if fd >= 0 {
        fsync(fd)
        close(fd)
    }
}

func fileExists(_ path: String) -> Bool {
    var info = stat()
    return stat(path, &info) == 0
}
