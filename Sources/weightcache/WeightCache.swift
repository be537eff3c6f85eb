// The `weightcache` command. Subcommands are thin: they parse, load the
// configuration, build the parts they need, and report. `@main` lives here,
// not in main.swift, so that ArgumentParser takes the async path.
import ArgumentParser
import Config
import Daemon
import Foundation
import Models
import ObjectStore
import Staging
import UnixSocket
import WeightCacheClient
import Wire

@main
struct WeightCache: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "weightcache",
        abstract: "Tiered model-weight storage and cache: object store -> NVMe -> RAM -> your GPU process.",
        discussion: """
            Errors go to stderr as one line. Exit codes:
              0   success
              1   failure
              2   data failed verification (integrity)
              3   not found (model, file, object)
              4   no daemon listening on socket.path
              5   permission denied by the daemon
              6   object store unreachable or failing
              7   no space in staging
              64  bad usage (arguments, a malformed model reference)
              78  bad configuration
            """,
        subcommands: [
            Serve.self, Ready.self, Preload.self, Pin.self, Unpin.self, Evict.self, Stats.self, List.self,
            Push.self, Pull.self, PathCommand.self, Inspect.self, Verify.self, Fetch.self, Put.self, Hash.self, ShowConfig.self,
        ])

    /// ArgumentParser's main, with the exit codes above for the errors it does not know.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asynchronous = command as? AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch {
            guard let code = ExitStatus.code(for: error) else { exit(withError: error) }
            let line = "\(error)".split(whereSeparator: \.isNewline).joined(separator: "; ")
            FileHandle.standardError.write(Data("weightcache: error: \(line)\n".utf8))
            Foundation.exit(code)
        }
    }
}

/// Exit codes a script can rely on (documented in `weightcache --help`).
enum ExitStatus {
    static let failure: Int32 = 1
    static let integrity: Int32 = 2
    static let notFound: Int32 = 3
    static let noDaemon: Int32 = 4
    static let permissionDenied: Int32 = 5
    static let storeUnavailable: Int32 = 6
    static let noSpace: Int32 = 7
    /// What the user typed is malformed (EX_USAGE, as ArgumentParser's own
    /// usage errors): a script can tell "fix the command" from "try again".
    static let usage: Int32 = 64
    static let configuration: Int32 = 78

    /// nil for anything else, ArgumentParser's own errors included (usage,
    /// help, ExitCode): it reports those itself (usage errors exit 64).
    static func code(for error: any Error) -> Int32? {
        switch error {
        case let error as ClientError: client(error)
        case let error as StagingError: staging(error)
        case let error as ModelError: model(error)
        case let error as ObjectStoreError: store(error)
        case is ConfigError: configuration
        case is CommandError, is SocketError, is DaemonError: failure
        default: nil
        }
    }

    static func client(_ error: ClientError) -> Int32 {
        switch error {
        case .daemon(let code, _):
            switch code {
            case .notFound: notFound
            case .permissionDenied: permissionDenied
            case .integrity: integrity
            case .unavailable: storeUnavailable
            case .noSpace: noSpace
            // The CLI sends the user's own arguments: a model reference or
            // tier the daemon refuses is bad usage, as it is when parsed here.
            case .invalidArgument: usage
            default: failure
            }
        case .socket(.system(let call, _, let errno)) where call == "connect" && (errno == ENOENT || errno == ECONNREFUSED): noDaemon
        case .socket, .protocolViolation: failure
        }
    }

    static func staging(_ error: StagingError) -> Int32 {
        switch error {
        case .integrity, .sizeMismatch: integrity
        case .notStaged: notFound
        case .noSpace: noSpace
        case .store(_, _, let store): self.store(store)
        case .localIO, .pinned: failure
        }
    }

    static func model(_ error: ModelError) -> Int32 {
        switch error {
        case .modelNotFound: notFound
        case .invalidManifest: integrity
        case .store(let store): self.store(store)
        case .invalidReference: usage
        case .localIO: failure
        }
    }

    static func store(_ error: ObjectStoreError) -> Int32 {
        switch error {
        case .notFound, .bucketNotFound: notFound
        case .retriesExhausted(_, let last): store(last)
        case .invalidKey, .localIO, .cancelled: failure
        default: storeUnavailable
        }
    }
}

/// A failure the user must act on, printed as it is (no usage text).
struct CommandError: Error, CustomStringConvertible {
    var description: String

    init(_ description: String) { self.description = description }
}
