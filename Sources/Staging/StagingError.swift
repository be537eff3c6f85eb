import Models
import ObjectStore

#if canImport(Glibc)
import Glibc
#endif

/// Every error of the staging tier. Integrity errors name the model, the
/// file and the block: data that fails a check is never served.
public enum StagingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Downloaded bytes do not match the manifest's digest (block nil: the whole file).
    case integrity(model: String, file: String, block: Int?, expected: String, actual: String)
    /// The store's object is not the size the manifest says.
    case sizeMismatch(model: String, file: String, manifest: UInt64, store: UInt64)
    case store(model: String, file: String, ObjectStoreError)
    case localIO(syscall: String, path: String, errno: Int32)
    /// `path` of a model that was never pulled into this staging directory.
    case notStaged(model: String)
    /// Not enough room for a file even after evicting every blob it may (unpinned, of other models).
    case noSpace(model: String, file: String, needed: UInt64, detail: String)
    /// An operation a pinned revision refuses (eviction): unpin it first.
    case pinned(model: String)

    public var description: String {
        switch self {
        case .integrity(let model, let file, let block, let expected, let actual):
            "integrity check failed for \(model), file \(file)" + (block.map { ", block \($0)" } ?? " (whole file)")
                + ": expected xxh3 \(expected), got \(actual); nothing of it was staged"
        case .sizeMismatch(let model, let file, let manifest, let store):
            "\(model), file \(file): the manifest says \(manifest) bytes, the store holds \(store)"
        case .store(let model, let file, let error): "\(model), file \(file): \(error)"
        case .localIO(let syscall, let path, let errno):
            "\(syscall)(\(path)) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        case .notStaged(let model): "\(model) is not staged here: run `weightcache pull \(model)` first"
        case .pinned(let model): "\(model) is pinned: unpin it first"
        case .noSpace(let model, let file, let needed, let detail):
            "no room to stage \(model), file \(file) (\(needed) bytes) even after evicting every unpinned blob of other models: \(detail)"
        }
    }
}
