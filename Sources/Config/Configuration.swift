// Config: what the daemon and the CLI are told, from where, and checked.
//
// Sources, later ones winning: built-in defaults, the config file (found at
// --config, else $WEIGHTCACHE_CONFIG, else ./config.json, else
// /etc/weightcache/config.json), environment variables (the AWS_* family
// first, then WEIGHTCACHE_*), then command-line flags. Every key is declared
// once in `Setting.all` with its parser, its environment variable and its
// documentation, so a file value, a variable and a flag are parsed alike and a
// bad one is reported the same way: by key, bad value and where it came from.

/// The whole configuration, validated. Plain values; no behaviour.
public struct Configuration: Sendable, Equatable {
    public struct Socket: Sendable, Equatable {
        /// Path of the daemon's Unix socket.
        public var path = "/run/weightcache/weightcache.sock"
        /// Permission bits of the socket file.
        public var mode: UInt32 = 0o660
        /// Group that owns the socket; nil keeps the daemon's.
        public var group: String? = nil
    }

    public struct Staging: Sendable, Equatable {
        /// NVMe directory for blobs, snapshots and partial downloads.
        public var directory = "/var/lib/weightcache/staging"
        public var budgetBytes: UInt64 = 200 << 30
        /// Free space always left on the staging filesystem.
        public var minFreeBytes: UInt64 = 10 << 30
        public var durability = Durability.deferred
        public var writes = Writes.direct
    }

    /// When a pulled blob's bytes must be on disk.
    public enum Durability: String, Sendable, Equatable, CaseIterable {
        /// Published once verified in the page cache, fsynced in the
        /// background; a blob not yet synced when the machine went down is
        /// re-verified before it is served.
        case deferred
        /// fsync before it is published.
        case immediate
    }

    /// How pulled bytes are written.
    public enum Writes: String, Sendable, Equatable, CaseIterable {
        /// O_DIRECT from a few reused buffers, on writer threads: no
        /// page-cache copy, no new memory touched; through the page cache
        /// where the filesystem refuses O_DIRECT.
        case direct
        /// pwrite into the page cache.
        case buffered
    }

    public struct RAMCache: Sendable, Equatable {
        public var budgetBytes: UInt64 = 8 << 30
        public var blockSize: UInt64 = 4 << 20
        public var policy = EvictionPolicy.s3fifo
        /// Most blocks read ahead of a sequential reader; 0 turns read-ahead off.
        public var readAheadBlocks = 32
        /// Most bytes of pinned models' staged files the daemon maps and
        /// locks in memory (mlock) for clients that mmap them; 0: none.
        public var lockBytes: UInt64 = 0
        public var pages = Pages.small
    }

    /// Which block the RAM tier evicts (BlockCache's `PolicyKind`; each
    /// case here maps to one there, so a new policy is a case in both).
    public enum EvictionPolicy: String, Sendable, Equatable, CaseIterable {
        case lru
        /// Scan-resistant: a block read once leaves before one read twice.
        case s3fifo = "s3-fifo"
    }

    /// The RAM tier arena's pages.
    public enum Pages: String, Sendable, Equatable, CaseIterable {
        /// Transparent huge pages where the kernel allows.
        case huge
        /// 4 KiB pages only.
        case small
    }

    public enum Addressing: String, Sendable, Equatable, CaseIterable {
        case path
        case virtualHost = "virtual-host"
    }

    public struct S3: Sendable, Equatable {
        /// nil means AWS itself (https://s3.REGION.amazonaws.com).
        public var endpoint: String? = nil
        public var region = "us-east-1"
        public var addressing = Addressing.path
        public var accessKeyID: String? = nil
        public var secretAccessKey: String? = nil
        public var sessionToken: String? = nil
        /// Profile of ~/.aws/credentials used when no key is configured.
        public var profile = "default"
        public var caBundle: String? = nil
    }

    public struct Models: Sendable, Equatable {
        /// Where published models live: `s3://BUCKET[/PREFIX]` or `file:///DIR`.
        /// Model NAME at revision REV is the folder ROOT/NAME/REV/.
        public var root = "s3://models"
    }

    public struct Transfer: Sendable, Equatable {
        public var partSize: UInt64 = 8 << 20
        /// 32: a cloud store carries each connection at a fraction of a
        /// node's link, so throughput grows with connections; against a store
        /// 30 ms and 25 MB/s per connection away, 8 reached 0.26 of this
        /// machine's ceiling and 32 reached 0.70, while next to the server 32
        /// cost nothing (Benchmarks/far-store.sh, docs/performance.md).
        public var concurrency = 32
        public var retries = 5
        public var retryBaseDelayMilliseconds = 200
        public var retryMaxDelayMilliseconds = 10_000
        public var connectTimeoutMilliseconds = 10_000
        public var lowSpeedTimeoutSeconds = 30
        /// Download bandwidth cap per transfer in bytes/s; 0 for none.
        public var maxBytesPerSecond: UInt64 = 0
    }

    /// Limits of the daemon's socket server (docs/protocol.md, "Limits").
    public struct Daemon: Sendable, Equatable {
        public var maxRequestFrameBytes: UInt64 = 64 << 10
        public var maxReadBytes: UInt64 = 8 << 20
        public var maxInFlight = 32
        public var maxConnections = 256
        public var idleTimeoutSeconds = 300
        /// How long SIGTERM waits for requests in flight before parking them.
        public var drainTimeoutSeconds = 10
        /// Models to bring onto a tier when the daemon starts, in the
        /// background: "NAME[@REV] [tier=nvme|ram] [pin]" each. The daemon is
        /// `ready` once every one is there.
        public var preload: [String] = []
    }

    /// Who may use the socket beyond the daemon's own user and root: user and
    /// group names or numeric ids; "*" in a read list admits every peer.
    public struct Access: Sendable, Equatable {
        public var readUsers: [String] = []
        public var readGroups: [String] = []
        public var adminUsers: [String] = []
        public var adminGroups: [String] = []
    }

    /// The Prometheus endpoint.
    public struct Metrics: Sendable, Equatable {
        /// HOST:PORT to serve /metrics on (loopback is the point); nil: off.
        public var address: String? = nil
    }

    public var socket = Socket()
    public var metrics = Metrics()
    public var daemon = Daemon()
    public var access = Access()
    public var staging = Staging()
    public var ramCache = RAMCache()
    public var s3 = S3()
    public var models = Models()
    public var transfer = Transfer()

    /// The built-in defaults.
    public init() {}
}

/// Why a configuration was refused. Names the key, the bad value (secrets
/// masked) and its source: a file path, an environment variable or a flag.
public enum ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidValue(key: String, value: String, source: String, reason: String)
    case unknownKey(key: String, source: String)
    case unreadableFile(path: String, reason: String)
    case malformedFile(path: String, reason: String)

    public var description: String {
        switch self {
        case .invalidValue(let key, let value, let source, let reason):
            "\(source): \(key) = \(value): \(reason)"
        case .unknownKey(let key, let source):
            "\(source): unknown key \(key) (see docs/configuration.md)"
        case .unreadableFile(let path, let reason): "cannot read config file \(path): \(reason)"
        case .malformedFile(let path, let reason): "config file \(path) is not valid JSON: \(reason)"
        }
    }

    /// The key at fault, when there is one.
    public var key: String? {
        switch self {
        case .invalidValue(let key, _, _, _), .unknownKey(let key, _): key
        default: nil
        }
    }
}
