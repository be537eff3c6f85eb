#if canImport(Glibc)
import Glibc
#endif

/// Every error of the RAM tier.
public enum CacheError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A block read from staging does not match its recorded xxh3-64: never returned.
    case integrity(blob: String, block: Int, expected: String, actual: String)
    /// Every slot holds a block that is pinned or being read: nothing can be evicted now.
    case full(blob: String, block: Int)
    case outOfRange(blob: String, range: Range<UInt64>, size: UInt64)
    case configuration(String)
    case system(syscall: String, path: String, errno: Int32)
    /// The origin of an unstaged blob (the object store) could not deliver a block.
    case origin(blob: String, block: Int, reason: String)

    public var description: String {
        switch self {
        case .integrity(let blob, let block, let expected, let actual):
            "blob \(blob), block \(block): xxh3-64 \(actual), expected \(expected); not served"
        case .full(let blob, let block):
            "no slot for blob \(blob), block \(block): every cached block is pinned or in use"
        case .outOfRange(let blob, let range, let size):
            "range \(range.lowerBound)..<\(range.upperBound) is outside blob \(blob) (\(size) bytes)"
        case .configuration(let text): text
        case .origin(let blob, let block, let reason): "blob \(blob), block \(block) could not be fetched: \(reason)"
        case .system(let syscall, let path, let errno):
            "\(syscall)(\(path)) failed: \(String(cString: strerror(errno))) (errno \(errno))"
        }
    }
}
