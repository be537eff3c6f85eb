import BlockCache
import Models
import ObjectStore
import Staging
import Wire

/// Every error a request can end in, each with the protocol code it is sent
/// as (docs/protocol.md, "Errors"). Errors of the tiers below are translated
/// here, once, so that a client sees one vocabulary whatever failed.
public enum DaemonError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidArgument(String)
    case notFound(String)
    case permissionDenied(String)
    case busy(String)
    case unavailable(String)
    case integrity(String)
    case noSpace(String)
    case shuttingDown
    case `internal`(String)

    public var code: ErrorCode {
        switch self {
        case .invalidArgument: .invalidArgument
        case .notFound: .notFound
        case .permissionDenied: .permissionDenied
        case .busy: .busy
        case .unavailable: .unavailable
        case .integrity: .integrity
        case .noSpace: .noSpace
        case .shuttingDown: .shuttingDown
        case .internal: .internal
        }
    }

    public var description: String {
        switch self {
        case .invalidArgument(let m), .notFound(let m), .permissionDenied(let m), .busy(let m), .unavailable(let m),
            .integrity(let m), .noSpace(let m), .internal(let m):
            m
        case .shuttingDown: "the daemon is shutting down"
        }
    }

    init(_ error: ModelError) {
        switch error {
        case .invalidReference: self = .invalidArgument("\(error)")
        case .modelNotFound: self = .notFound("\(error)")
        case .invalidManifest: self = .integrity("\(error)")
        case .store(let store): self = DaemonError(store, context: nil)
        case .localIO: self = .internal("\(error)")
        }
    }

    init(_ error: ObjectStoreError, context: String?) {
        let text = (context.map { $0 + ": " } ?? "") + "\(error)"
        if case .notFound = error { self = .notFound(text) } else { self = .unavailable(text) }
    }

    init(_ error: StagingError) {
        switch error {
        case .integrity, .sizeMismatch: self = .integrity("\(error)")
        case .store(let model, let file, let store): self = DaemonError(store, context: "\(model), file \(file)")
        case .localIO: self = .internal("\(error)")
        case .notStaged: self = .notFound("\(error)")
        case .noSpace: self = .noSpace("\(error)")
        case .pinned: self = .invalidArgument("\(error)")
        }
    }

    init(_ error: CacheError) {
        switch error {
        case .integrity: self = .integrity("\(error)")
        case .full: self = .busy("\(error)")
        case .outOfRange: self = .invalidArgument("\(error)")
        case .configuration, .system: self = .internal("\(error)")
        case .origin: self = .unavailable("\(error)")
        }
    }

    /// Any error of the layers below, translated.
    static func from(_ error: any Error) -> DaemonError {
        switch error {
        case let e as DaemonError: e
        case let e as StagingError: DaemonError(e)
        case let e as ModelError: DaemonError(e)
        case let e as CacheError: DaemonError(e)
        case let e as ObjectStoreError: DaemonError(e, context: nil)
        default: .internal("\(error)")
        }
    }
}
