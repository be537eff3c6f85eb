/// The protocol version this codec speaks.
public let protocolVersion: UInt16 = 1
/// The hello's magic string: a peer that is not a weightcache client is
/// turned away at its first frame.
public let protocolMagic = "weightcache"

/// Message type numbers (docs/protocol.md, "Messages").
public enum MessageType: UInt16, Sendable, CaseIterable {
    case hello = 0x01, resolve, stat, list, read, open, preload, pin, unpin, evict, stats
    case ok = 0x80, helloOK, model, file, models, data, opened, progress
    case statsReply = 0x8B
    case error = 0xFF

    public var isRequest: Bool { rawValue < 0x80 }

    /// The name of the message, as in docs/protocol.md and the daemon's
    /// per-operation counters. A switch, not `"\(self)"`: interpolating an
    /// enum goes through runtime reflection, measured at a few µs per request.
    public var name: String {
        switch self {
        case .hello: "hello"
        case .resolve: "resolve"
        case .stat: "stat"
        case .list: "list"
        case .read: "read"
        case .open: "open"
        case .preload: "preload"
        case .pin: "pin"
        case .unpin: "unpin"
        case .evict: "evict"
        case .stats: "stats"
        case .ok: "ok"
        case .helloOK: "helloOK"
        case .model: "model"
        case .file: "file"
        case .models: "models"
        case .data: "data"
        case .opened: "opened"
        case .progress: "progress"
        case .statsReply: "statsReply"
        case .error: "error"
        }
    }
}

/// Where data lives: `preload` brings a model up to a tier; `evict` removes
/// it down from one (nvme: from both tiers; ram: from RAM only).
public enum Tier: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case nvme = 1
    case ram = 2

    public var description: String { self == .nvme ? "nvme" : "ram" }
}

/// Per tier state of a file on NVMe.
public enum StagedState: UInt8, Sendable, CaseIterable {
    case absent = 0, partial = 1, staged = 2
}

/// Error codes (docs/protocol.md, "Errors"). A struct rather than an enum:
/// a client must carry codes it does not know yet.
public struct ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let malformed = ErrorCode(rawValue: 1)
    public static let unsupportedVersion = ErrorCode(rawValue: 2)
    public static let helloRequired = ErrorCode(rawValue: 3)
    public static let unknownOperation = ErrorCode(rawValue: 4)
    public static let invalidArgument = ErrorCode(rawValue: 5)
    public static let notFound = ErrorCode(rawValue: 6)
    public static let permissionDenied = ErrorCode(rawValue: 7)
    public static let busy = ErrorCode(rawValue: 8)
    public static let unavailable = ErrorCode(rawValue: 9)
    public static let integrity = ErrorCode(rawValue: 10)
    public static let noSpace = ErrorCode(rawValue: 11)
    public static let shuttingDown = ErrorCode(rawValue: 12)
    public static let `internal` = ErrorCode(rawValue: 13)

    static let names: [UInt16: String] = [
        1: "malformed", 2: "unsupported-version", 3: "hello-required", 4: "unknown-operation",
        5: "invalid-argument", 6: "not-found", 7: "permission-denied", 8: "busy", 9: "unavailable",
        10: "integrity", 11: "no-space", 12: "shutting-down", 13: "internal",
    ]

    public var description: String { ErrorCode.names[rawValue] ?? "error-\(rawValue)" }
}

public struct Hello: Equatable, Sendable {
    public var magic: String
    public var minVersion: UInt16
    public var maxVersion: UInt16
    public var client: String

    public init(magic: String = protocolMagic, minVersion: UInt16 = protocolVersion, maxVersion: UInt16 = protocolVersion, client: String) {
        self.magic = magic
        self.minVersion = minVersion
        self.maxVersion = maxVersion
        self.client = client
    }
}

public struct HelloOK: Equatable, Sendable {
    public var version: UInt16
    public var server: String
    public var maxRequestFrame: UInt32
    public var maxReadLength: UInt32
    public var maxInFlight: UInt16
    public var blockSize: UInt32

    public init(version: UInt16, server: String, maxRequestFrame: UInt32, maxReadLength: UInt32, maxInFlight: UInt16, blockSize: UInt32) {
        self.version = version
        self.server = server
        self.maxRequestFrame = maxRequestFrame
        self.maxReadLength = maxReadLength
        self.maxInFlight = maxInFlight
        self.blockSize = blockSize
    }
}

public struct FileInfo: Equatable, Sendable {
    public var path: String
    public var size: UInt64
    /// xxh3-128 hex; empty while unknown (no manifest, not staged yet).
    public var digest: String
    public var nvme: StagedState
    public var ramBytes: UInt64

    public init(path: String, size: UInt64, digest: String, nvme: StagedState, ramBytes: UInt64) {
        self.path = path
        self.size = size
        self.digest = digest
        self.nvme = nvme
        self.ramBytes = ramBytes
    }
}

public struct ModelInfo: Equatable, Sendable {
    public var model: String
    /// The staged folder a framework can load; empty until staged.
    public var snapshot: String
    public var pinned: Bool
    public var files: [FileInfo]

    public init(model: String, snapshot: String, pinned: Bool, files: [FileInfo]) {
        self.model = model
        self.snapshot = snapshot
        self.pinned = pinned
        self.files = files
    }
}

public struct ModelSummary: Equatable, Sendable {
    public var model: String
    public var files: UInt32
    public var bytes: UInt64
    public var nvmeBytes: UInt64
    public var ramBytes: UInt64
    public var pinned: Bool

    public init(model: String, files: UInt32, bytes: UInt64, nvmeBytes: UInt64, ramBytes: UInt64, pinned: Bool) {
        self.model = model
        self.files = files
        self.bytes = bytes
        self.nvmeBytes = nvmeBytes
        self.ramBytes = ramBytes
        self.pinned = pinned
    }
}

/// What a client asks.
public enum Request: Equatable, Sendable {
    case hello(Hello)
    case resolve(model: String)
    case stat(model: String, path: String)
    case list
    case read(model: String, path: String, offset: UInt64, length: UInt32)
    case open(model: String, path: String)
    case preload(model: String, tier: Tier, pin: Bool)
    case pin(model: String)
    case unpin(model: String)
    case evict(model: String, tier: Tier)
    case stats

    public var type: MessageType {
        switch self {
        case .hello: .hello
        case .resolve: .resolve
        case .stat: .stat
        case .list: .list
        case .read: .read
        case .open: .open
        case .preload: .preload
        case .pin: .pin
        case .unpin: .unpin
        case .evict: .evict
        case .stats: .stats
        }
    }

    /// Operations that change what the node holds need the admin list.
    public var needsAdmin: Bool {
        switch self {
        case .preload, .pin, .unpin, .evict: true
        default: false
        }
    }
}

/// What the daemon answers.
public enum Response: Equatable, Sendable {
    case ok(String)
    case helloOK(HelloOK)
    case model(ModelInfo)
    case file(FileInfo)
    case models([ModelSummary])
    case data([UInt8])
    /// Sent with a file descriptor attached (SCM_RIGHTS).
    case opened(FileInfo)
    case progress(done: UInt64, total: UInt64)
    case stats(json: String)
    case error(ErrorCode, String)

    public var type: MessageType {
        switch self {
        case .ok: .ok
        case .helloOK: .helloOK
        case .model: .model
        case .file: .file
        case .models: .models
        case .data: .data
        case .opened: .opened
        case .progress: .progress
        case .stats: .statsReply
        case .error: .error
        }
    }

    /// Whether this ends its request (everything but `progress` does).
    public var isFinal: Bool {
        if case .progress = self { return false }
        return true
    }
}
