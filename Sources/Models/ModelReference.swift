// Models: what a published model is, as the object store holds it.
//
// A model is NAME[@REVISION] under a models root; its files live in the folder
// ROOT/NAME/REVISION/ beside a manifest (`weightcache-manifest.json`) that lists
// every file with its size, xxh3-128 and per-block xxh3-64 digests. `push`
// uploads the files first and the manifest last: the manifest is the commit
// point, so a reader never sees a half-published model. A folder without a
// manifest (uploaded by other tools) is still a model: it is listed, and its
// files are hashed while they download.

/// `NAME[@REVISION]`. Names are path-like (`org/model`), revisions single words.
public struct ModelReference: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    public var revision: String

    public static let defaultRevision = "main"

    public init(name: String, revision: String = ModelReference.defaultRevision) throws(ModelError) {
        try Self.check(name: name, revision: revision)
        self.name = name
        self.revision = revision
    }

    /// Parses `NAME` or `NAME@REVISION`.
    public init(parsing text: String) throws(ModelError) {
        let parts = text.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        try self.init(name: String(parts[0]), revision: parts.count > 1 ? String(parts[1]) : Self.defaultRevision)
    }

    public var description: String { "\(name)@\(revision)" }

    /// The model's folder under the models root, with a trailing slash.
    public var folder: String { "\(name)/\(revision)/" }

    static func check(name: String, revision: String) throws(ModelError) {
        let reference = "\(name)@\(revision)"
        func word(_ s: Substring) -> Bool {
            !s.isEmpty && s != "." && s != ".." && s.utf8.count <= 128
                && s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
        }
        guard !name.isEmpty, name.utf8.count <= 512 else {
            throw .invalidReference(reference, reason: "a name is 1 to 512 characters")
        }
        guard name.split(separator: "/", omittingEmptySubsequences: false).allSatisfy(word) else {
            throw .invalidReference(
                reference, reason: "name segments are letters, digits, '.', '_' or '-', separated by single '/' (no '.' or '..')")
        }
        guard word(Substring(revision)) else {
            throw .invalidReference(reference, reason: "a revision is letters, digits, '.', '_' or '-' (not '.' or '..')")
        }
    }
}
