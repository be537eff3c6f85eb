import Foundation
import Integrity

/// What `push` publishes next to a model's files, and `pull` trusts only after
/// `validate()`: for each file its path, object key, size, xxh3-128 and
/// per-block xxh3-64 digests. JSON; field names are part of the format.
public struct Manifest: Codable, Sendable, Equatable {
    /// The object name of the manifest inside the model's folder.
    public static let objectName = "weightcache-manifest.json"
    public static let currentFormat = 1
    public static let defaultBlockSize = 4 << 20

    public enum Encoding: String, Codable, Sendable {
        case raw
        /// An lz4 frame (`push --compress lz4`).
        case lz4
    }

    public struct File: Codable, Sendable, Equatable {
        /// Path inside the model, `/`-separated: the name clients see.
        public var path: String
        /// Object key relative to the model's folder.
        public var object: String
        /// Size of the file's content (decoded), in bytes.
        public var size: UInt64
        /// xxh3-128 of the content, 32 hex digits; nil when not known yet
        /// (a model without a manifest is hashed while it downloads).
        public var xxh3_128: String?
        /// xxh3-64 of each `blockSize` block of the content, 16 hex digits each.
        public var blocks: [String]?
        public var encoding: Encoding
        /// For `lz4`: the stored size of each block's frame, in block order (the
        /// object is the frames back to back), so any run of blocks can be
        /// fetched by range and decoded on its own.
        public var frames: [UInt64]?

        public init(
            path: String, object: String, size: UInt64, xxh3_128: String?, blocks: [String]?,
            encoding: Encoding = .raw, frames: [UInt64]? = nil
        ) {
            self.path = path
            self.object = object
            self.size = size
            self.xxh3_128 = xxh3_128
            self.blocks = blocks
            self.encoding = encoding
            self.frames = frames
        }

        /// Bytes of the stored object: the size, or the frames' sum for lz4.
        public var storedSize: UInt64 {
            encoding == .lz4 ? (frames ?? []).reduce(0, +) : size
        }
    }

    public var format: Int
    public var model: String
    public var revision: String
    public var blockSize: Int
    /// xxh3-128 of every other field (`computedChecksum`): the manifest
    /// verifies itself, so one corrupted on its way from the store is refused
    /// (and fetched again) instead of trusted. Absent in manifests pushed
    /// before it existed; those are accepted unchecked.
    public var checksum: String?
    public var files: [File]

    public init(model: ModelReference, blockSize: Int = Manifest.defaultBlockSize, files: [File]) {
        self.format = Self.currentFormat
        self.model = model.name
        self.revision = model.revision
        self.blockSize = blockSize
        self.files = files
    }

    public func encoded() -> [UInt8] {
        var sealed = self
        sealed.checksum = computedChecksum()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return Array(try! encoder.encode(sealed))
    }

    /// xxh3-128 over a canonical text of every field but `checksum`.
    public func computedChecksum() -> String {
        var text = "weightcache-manifest\n\(format)\n\(model)\n\(revision)\n\(blockSize)\n"
        for file in files {
            text += [
                file.path, file.object, String(file.size), file.xxh3_128 ?? "-", file.encoding.rawValue,
                (file.blocks ?? []).joined(separator: ","), (file.frames ?? []).map(String.init).joined(separator: ","),
            ].joined(separator: "\t") + "\n"
        }
        return Digest128.of(Array(text.utf8)).description
    }

    /// Decodes and validates a manifest read for `reference`.
    public static func decode(_ bytes: [UInt8], for reference: ModelReference) throws(ModelError) -> Manifest {
        let manifest: Manifest
        do {
            manifest = try JSONDecoder().decode(Manifest.self, from: Data(bytes))
        } catch {
            throw .invalidManifest(model: reference.description, file: nil, reason: "not a manifest: \(error)")
        }
        if let checksum = manifest.checksum, checksum != manifest.computedChecksum() {
            throw .invalidManifest(
                model: reference.description, file: nil,
                reason: "checksum mismatch: its content hashes to \(manifest.computedChecksum()), it says \(checksum) (corrupted in transit, or edited by hand)")
        }
        try manifest.validate(for: reference)
        return manifest
    }

    /// Every rule a manifest must keep before any of it is used: paths that stay
    /// inside the snapshot, sizes that agree with the block lists, well-formed
    /// digests, no duplicates. Errors name the model and the file.
    public func validate(for reference: ModelReference) throws(ModelError) {
        let model = reference.description
        func fail(_ file: String?, _ reason: String) -> ModelError { .invalidManifest(model: model, file: file, reason: reason) }
        guard format == Self.currentFormat else { throw fail(nil, "format \(format); this version reads \(Self.currentFormat)") }
        guard self.model == reference.name, revision == reference.revision else {
            throw fail(nil, "it describes \(self.model)@\(revision)")
        }
        guard blockSize >= 64 << 10, blockSize <= 64 << 20, blockSize & (blockSize - 1) == 0 else {
            throw fail(nil, "blockSize \(blockSize) is not a power of two from 64 KiB to 64 MiB")
        }
        var seen = Set<String>()
        for file in files {
            if let problem = Self.pathProblem(file.path) { throw fail(file.path, "path \(problem)") }
            if let problem = Self.pathProblem(file.object) { throw fail(file.path, "object key \(problem)") }
            guard seen.insert(file.path).inserted else { throw fail(file.path, "listed twice") }
            if let digest = file.xxh3_128, !Self.isHex(digest, count: 32) {
                throw fail(file.path, "xxh3_128 is not 32 hex digits")
            }
            if let blocks = file.blocks {
                let expected = (file.size + UInt64(blockSize) - 1) / UInt64(blockSize)
                guard UInt64(blocks.count) == expected else {
                    throw fail(file.path, "size \(file.size) needs \(expected) blocks of \(blockSize) bytes, the manifest lists \(blocks.count)")
                }
                if let bad = blocks.firstIndex(where: { !Self.isHex($0, count: 16) }) {
                    throw fail(file.path, "block \(bad) digest is not 16 hex digits")
                }
            }
            guard (file.xxh3_128 == nil) == (file.blocks == nil) else {
                throw fail(file.path, "xxh3_128 and blocks go together")
            }
            switch file.encoding {
            case .raw:
                guard file.frames == nil else { throw fail(file.path, "frames are for lz4 files only") }
            case .lz4:
                guard let frames = file.frames, let blocks = file.blocks, frames.count == blocks.count else {
                    throw fail(file.path, "an lz4 file lists one frame size per block")
                }
                if let bad = frames.firstIndex(where: { $0 == 0 || $0 > UInt64(blockSize) * 2 + 65_536 }) {
                    throw fail(file.path, "frame \(bad) size \(frames[bad]) is impossible for a \(blockSize)-byte block")
                }
            }
        }
        // A file may not also be a directory of another ("a" and "a/b").
        for path in seen {
            var prefix = Substring(path)
            while let slash = prefix.lastIndex(of: "/") {
                prefix = prefix[..<slash]
                if seen.contains(String(prefix)) { throw fail(String(prefix), "is both a file and the folder of \(path)") }
            }
        }
    }

    /// Why `path` cannot name a file inside a snapshot, or nil if it can.
    public static func pathProblem(_ path: String) -> String? {
        if path.isEmpty { return "is empty" }
        if path.utf8.contains(0) { return "contains NUL" }
        if path.hasPrefix("/") { return "is absolute" }
        if path.utf8.count > 1024 { return "is longer than 1024 bytes" }
        if path.contains("\\") { return "contains a backslash" }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        if parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) {
            return "has an empty, '.' or '..' component"
        }
        return nil
    }

    static func isHex(_ s: String, count: Int) -> Bool {
        s.utf8.count == count && s.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }
}
