import ObjectStore

/// Every error of publishing and resolving models.
public enum ModelError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidReference(String, reason: String)
    /// The manifest (or a file entry in it) breaks a rule; nothing of it is used.
    case invalidManifest(model: String, file: String?, reason: String)
    /// No manifest and no objects under the model's folder.
    case modelNotFound(model: String, location: String)
    case store(ObjectStoreError)
    /// A local file could not be read (push).
    case localIO(syscall: String, path: String, errno: Int32)

    public var description: String {
        switch self {
        case .invalidReference(let text, let reason): "invalid model reference \(String(reflecting: text)): \(reason)"
        case .invalidManifest(let model, let file, let reason):
            "invalid manifest of \(model)" + (file.map { ", file \(String(reflecting: $0))" } ?? "") + ": \(reason)"
        case .modelNotFound(let model, let location): "model \(model) not found: no manifest and no objects at \(location)"
        case .store(let error): "\(error)"
        case .localIO(let syscall, let path, let errno): "\(syscall)(\(path)) failed (errno \(errno))"
        }
    }
}
