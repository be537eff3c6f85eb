import ArgumentParser
import Config
import Foundation
import Logging
import ObjectStore

/// Options every subcommand takes: where the configuration comes from and
/// the flags that override it (flags beat environment beats file).
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Config file (default: $WEIGHTCACHE_CONFIG, ./config.json, /etc/weightcache/config.json).")
    var config: String?

    @Option(name: .long, help: "S3 endpoint URL (s3.endpoint).")
    var endpoint: String?

    @Option(name: .long, help: "S3 region (s3.region).")
    var region: String?

    @Option(name: .long, help: "Bucket addressing: path or virtual-host (s3.addressing).")
    var addressing: String?

    @Option(name: .long, help: "Models root: s3://BUCKET[/PREFIX] or file:///DIR (models.root).")
    var models: String?

    @Option(name: .long, help: "Part size of parallel transfers, e.g. 8MiB (transfer.partSize).")
    var partSize: String?

    @Option(name: .long, help: "Parallel requests per transfer (transfer.concurrency, default 32). A far store gives each connection a fraction of the link: raise it until the pull's rate stops growing.")
    var concurrency: String?

    @Option(name: .long, help: "Retries after a failed request (transfer.retries).")
    var retries: String?

    @Option(name: .customLong("set"), help: ArgumentHelp("Set any configuration key.", valueName: "key=value"))
    var assignments: [String] = []

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: String = "notice"

    /// The configuration these options select, validated.
    func load() throws -> Configuration {
        var flags: [(key: String, value: String)] = []
        let named: [(String, String?)] = [
            ("s3.endpoint", endpoint), ("s3.region", region), ("s3.addressing", addressing),
            ("models.root", models), ("transfer.partSize", partSize), ("transfer.concurrency", concurrency), ("transfer.retries", retries),
        ]
        for case let (key, value?) in named { flags.append((key, value)) }
        for assignment in assignments {
            guard let eq = assignment.firstIndex(of: "=") else {
                throw ValidationError("--set wants key=value, got \(assignment)")
            }
            flags.append((String(assignment[..<eq]), String(assignment[assignment.index(after: eq)...])))
        }
        let loader = ConfigurationLoader()
        return try loader.load(file: loader.locate(explicit: config), flags: flags)
    }

    func logger(_ label: String) throws -> Logger {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("unknown log level \(logLevel)")
        }
        var logger = Logger(label: label) { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = level
        return logger
    }
}

/// The parts a command builds from its configuration.
struct Wiring {
    let config: Configuration
    let logger: Logger

    func s3Settings() -> S3Settings {
        let credentials = config.s3.accessKeyID.flatMap { id in
            config.s3.secretAccessKey.map {
                S3Credentials(accessKeyID: id, secretAccessKey: $0, sessionToken: config.s3.sessionToken)
            }
        }
        return S3Settings(
            endpoint: config.s3.endpoint, region: config.s3.region,
            addressing: S3Addressing(rawValue: config.s3.addressing.rawValue) ?? .path,
            credentials: credentials, caBundle: config.s3.caBundle,
            retry: RetryPolicy(
                maxRetries: config.transfer.retries,
                baseDelayMilliseconds: config.transfer.retryBaseDelayMilliseconds,
                maxDelayMilliseconds: config.transfer.retryMaxDelayMilliseconds),
            connectTimeoutMilliseconds: config.transfer.connectTimeoutMilliseconds,
            lowSpeedTimeoutSeconds: config.transfer.lowSpeedTimeoutSeconds,
            partSize: config.transfer.partSize, concurrency: config.transfer.concurrency)
    }

    var downloader: ParallelDownloader {
        ParallelDownloader(
            partSize: config.transfer.partSize, concurrency: config.transfer.concurrency,
            maxBytesPerSecond: config.transfer.maxBytesPerSecond)
    }

    /// The store a URL names and the key (or prefix) inside it.
    /// `s3://bucket/key`; `file:///dir/name` (a directory: the store itself).
    func store(for location: Location) throws -> any ObjectStore {
        switch location {
        case .s3(let bucket, _): try S3Client(settings: s3Settings(), logger: logger).bucket(bucket)
        case .file(let root, _): FileStore(root: root)
        }
    }
}

/// A place in an object store, as written on the command line.
enum Location: Equatable, CustomStringConvertible {
    case s3(bucket: String, key: String)
    case file(root: String, key: String)

    var key: String {
        switch self {
        case .s3(_, let key), .file(_, let key): key
        }
    }

    var description: String {
        switch self {
        case .s3(let bucket, let key): "s3://\(bucket)/\(key)"
        case .file(let root, let key): "file://\(root)/\(key)"
        }
    }

    /// `file://` paths split into an existing directory (the store) and the
    /// rest (the key): `file:///data/m/a.bin` -> root /data/m, key a.bin.
    init(parsing text: String) throws {
        if text.hasPrefix("s3://") {
            let rest = text.dropFirst(5)
            let bucket = rest.prefix { $0 != "/" }
            guard !bucket.isEmpty else { throw ValidationError("no bucket in \(text)") }
            self = .s3(bucket: String(bucket), key: String(rest.dropFirst(bucket.count + 1)))
        } else if text.hasPrefix("file://") {
            let path = String(text.dropFirst(7))
            guard path.hasPrefix("/") else { throw ValidationError("file URLs are absolute: file:///path, got \(text)") }
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
                self = .file(root: path, key: "")
            } else {
                let ns = path as NSString
                self = .file(root: ns.deletingLastPathComponent, key: ns.lastPathComponent)
            }
        } else {
            throw ValidationError("expected s3://BUCKET/KEY or file:///PATH, got \(text)")
        }
    }
}
