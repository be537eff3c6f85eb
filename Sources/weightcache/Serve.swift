import ArgumentParser
import BlockCache
import Config
import Daemon
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import Staging

#if canImport(Glibc)
import Glibc
#endif

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the daemon: staging + RAM cache behind the Unix socket (docs/protocol.md). SIGTERM drains.",
        discussion: """
            Examples:
              weightcache serve
              weightcache serve --config /etc/weightcache/config.json --set socket.path=/tmp/wc.sock
            """)

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let wiring = Wiring(config: try global.load(), logger: try global.logger("weightcache.serve"))
        let config = wiring.config
        let logger = wiring.logger
        let staging = wiring.staging()
        // One daemon per staging directory, claimed before anything is touched.
        guard let claim = try staging.claimForDaemon() else {
            throw CommandError("another weightcache daemon is using \(config.staging.directory) (staging/daemon.lock is held); stop it first")
        }
        defer { withExtendedLifetime(claim) {} }
        // Start-up check (quick: a full re-hash is `weightcache verify`):
        // crash leftovers removed, partials kept for resume, blobs published
        // unsynced before a reboot or without fitting digests hashed, and
        // those that do not match their name quarantined.
        try staging.layout.prepare()
        let check = try staging.check(logger: logger, scope: .quick)
        logger.info(
            "staging \(config.staging.directory): \(check.blobsVerified) blob(s) hashed, \(check.blobsTrusted) trusted by their digests, \(check.settled.synced) synced, \(check.quarantined.count) quarantined, \(check.removed.count) leftover(s) removed, \(check.resumable) partial(s) to resume")
        let policy: PolicyKind =
            switch config.ramCache.policy {
            case .lru: .lru
            case .s3fifo: .s3fifo
            }
        let quarantineLogger = logger
        let cache = try BlockCache(
            budgetBytes: config.ramCache.budgetBytes, blockSize: Int(config.ramCache.blockSize), policy: policy,
            readAheadBlocks: config.ramCache.readAheadBlocks, hugePages: config.ramCache.pages == .huge,
            // Half the store connections for read-ahead, leaving the rest to
            // the reads themselves; one part's worth of blocks per request.
            remoteReadAhead: RemoteReadAhead(
                requests: config.transfer.concurrency / 2,
                runBlocks: Int(config.transfer.partSize / max(1, config.ramCache.blockSize)))
        ) { digest, block in
            _ = try? staging.quarantine(blob: digest, reason: "block \(block) failed its xxh3-64 check on the way into RAM", logger: quarantineLogger)
        }
        logger.info(
            "RAM tier: \(ByteSize.format(config.ramCache.budgetBytes)) arena of \(ByteSize.format(config.ramCache.blockSize)) blocks, \(Self.pages(config.ramCache.pages))")
        let node = try Node(
            staging: staging, repository: try wiring.repository(), cache: cache, logger: logger,
            lockBytes: config.ramCache.lockBytes)
        node.lockPinnedModels()
        let server = Server(
            node: node, path: config.socket.path, mode: mode_t(config.socket.mode), group: try Self.group(config.socket.group),
            limits: ServerLimits(
                maxRequestFrame: Int(config.daemon.maxRequestFrameBytes), maxReadLength: Int(config.daemon.maxReadBytes),
                maxInFlight: config.daemon.maxInFlight, maxConnections: config.daemon.maxConnections,
                idleTimeout: .seconds(config.daemon.idleTimeoutSeconds), drainTimeout: .seconds(config.daemon.drainTimeoutSeconds)),
            access: try AccessPolicy(config.access), logger: logger)
        try FileManager.default.createDirectory(
            atPath: (config.socket.path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        node.preloadInBackground(config.daemon.preload.map(PreloadSpec.init))
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: DaemonService(server: server, node: node))]
        if let address = config.metrics.address {
            // The one process-wide bootstrap: the S3 client's request metrics
            // (swift-metrics) land in the registry the endpoint serves.
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            services.append(.init(service: MetricsService(
                address: address, server: server, registry: PrometheusRegistryBox(registry), logger: logger)))
        }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        logger.info("stopped")
    }

    /// What the arena's pages will be, for the start-up log: `huge` only
    /// asks, and the kernel's transparent huge page mode decides.
    static func pages(_ setting: Configuration.Pages) -> String {
        guard setting == .huge else { return "4 KiB pages (ramCache.pages: small)" }
        let thp = BlockCache.transparentHugePages()
        guard let mode = thp.mode else { return "huge pages asked for (ramCache.pages: huge); no transparent huge pages here, so 4 KiB pages" }
        return "huge pages asked for (ramCache.pages: huge); transparent_hugepage/enabled is \(mode)"
            + (thp.advisedGetThem ? "" : ", so 4 KiB pages")
    }

    static func group(_ name: String?) throws -> gid_t? {
        guard let name else { return nil }
        if let id = gid_t(name) { return id }
        guard let entry = getgrnam(name) else { throw CommandError("socket.group: no such group \(name)") }
        return entry.pointee.gr_gid
    }
}
