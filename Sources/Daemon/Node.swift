// Daemon: the node's one owner of staging and the block cache, and the socket
// server in front of them.
//
// `Node` is the engine every request ends in: it resolves models (from the
// store's manifest, or from the local snapshot when the store is away), reads
// through the RAM tier (which loads from NVMe, or from the store while a file
// is not staged yet), opens staged blobs for fd passing, and runs pulls, one
// per model however many requests want it. `Server` and `Connection` only
// speak the protocol; `AccessPolicy` decides who may do what.
import BlockCache
import Foundation
import Integrity
import Logging
import Models
import ObjectStore
import Staging
import Synchronization
import Wire

/// One file of a resolved model: what the manifest (or the snapshot) says.
struct ResolvedFile: Sendable {
    var path: String
    var size: UInt64
    /// xxh3-128: nil for a file of a model without a manifest, until staged.
    var digest: String?
    /// Per-block xxh3-64 from the manifest (nil without one).
    var blockDigests: [UInt64]? = nil
    /// The manifest's entry, for pulls and read-through (nil: known from the snapshot only).
    var entry: Manifest.File? = nil
}

/// A model as the daemon serves it.
struct ResolvedModel: Sendable {
    let reference: ModelReference
    let blockSize: Int
    let files: [ResolvedFile]
    /// From the store (nil: resolved from the local snapshot, the store being unreachable).
    let resolved: ModelRepository.Resolved?
    let at: ContinuousClock.Instant
    private let byPath: [String: Int]

    init(reference: ModelReference, blockSize: Int, files: [ResolvedFile], resolved: ModelRepository.Resolved?) {
        self.reference = reference
        self.blockSize = blockSize
        self.files = files
        self.resolved = resolved
        at = .now
        byPath = Dictionary(files.enumerated().map { ($1.path, $0) }) { first, _ in first }
    }

    func file(_ path: String) -> ResolvedFile? { byPath[path].map { files[$0] } }
    var bytes: UInt64 { files.reduce(0) { $0 + $1.size } }
}

/// Counters the stats surface reports beyond the tiers' own.
struct NodeCounters: Sendable {
    /// Bytes the node's pulls fetched from the store.
    var bytesPulled: UInt64 = 0
    /// How long the node's pulls waited for the disk: receiving threads
    /// blocked on a full queue of O_DIRECT writes (`PullReport.waitedForDisk`).
    var pullDiskWait: Duration = .zero
    /// When a client last named each model (resolve, stat, read, open), to
    /// about a second: connections remember their last read's target that long.
    var lastUse: [ModelReference: Date] = [:]
}

/// The node: staging (NVMe), the block cache (RAM) and the models' store.
/// Thread-safe; its methods block their caller (connection threads).
public final class Node: @unchecked Sendable {
    let staging: Staging
    let repository: ModelRepository
    let cache: BlockCache
    let logger: Logger
    let started = ContinuousClock.now
    /// How long a resolution from the store is reused: a revision such as
    /// `main` may move, but not every read should cost a GET of the manifest.
    let resolutionTTL: Duration

    // Guarded by `lock`.
    let lock = NSLock()
    var models: [ModelReference: ResolvedModel] = [:]
    /// Client spellings of model references, parsed (bounded: cleared when large).
    var parsed: [String: ModelReference] = [:]
    /// Models whose resolution is being refreshed in the background.
    var refreshing = Set<ModelReference>()
    /// Staged blobs as the cache reads them (digests file read once, not per read).
    var sources: [String: BlobSource] = [:]
    /// Tensor layouts of safetensors blobs (nil inside: not parseable).
    var tensorIndexes: [String: SafetensorsIndex?] = [:]
    var pulls: [ModelReference: PullJob] = [:]
    /// Models whose RAM blocks are pinned (preloaded to RAM with pin).
    var ramPinned = Set<ModelReference>()
    /// Bumped whenever a resolution or a blob's source changes: connections
    /// that remember their last read's target check it instead of looking up.
    let generation = Atomic<Int>(0)
    /// Node-wide counters for stats (bytes pulled from the store, last use per model).
    let counters = Mutex(NodeCounters())
    /// The `daemon.preload` list's progress (nil: none configured).
    var startupPreloads: StartupPreloads?
    /// Set by drain: waits for pulls end with `shuttingDown` (the pulls are parked).
    var draining = false
    let pending: PendingPulls
    /// The pulls a previous run left unfinished, read before this run starts any.
    let parked: [ModelReference]
    let pageLocks: PageLocks
    /// `transfer.concurrency` requests to the store, shared by every pull
    /// and read-through fetch of the daemon; readers first.
    let transferSlots: PartSlots
    /// Read-through fetches in flight: a pull a cold read starts waits for them (see `ReadThroughActivity`).
    let readThrough = ReadThroughActivity()

    /// `lockBytes`: `ramCache.lockBytes`, the budget of zero-copy pins (0: off).
    public init(
        staging: Staging, repository: ModelRepository, cache: BlockCache, logger: Logger,
        lockBytes: UInt64 = 0, resolutionTTL: Duration = .seconds(30)
    ) throws(DaemonError) {
        pageLocks = PageLocks(limit: lockBytes, logger: logger)
        transferSlots = PartSlots(staging.transferConcurrency)
        self.staging = staging
        self.repository = repository
        self.cache = cache
        self.logger = logger
        self.resolutionTTL = resolutionTTL
        do { try staging.layout.prepare() } catch { throw DaemonError(error) }
        pending = PendingPulls(path: staging.layout.root + "/daemon-pulls.json")
        parked = pending.list()
    }

    /// Requests waiting for a pull give up (the pull itself is parked: its
    /// intent stays recorded and the next start resumes it).
    public func beginDraining() { lock.withLock { draining = true } }

    /// Something a cached read target may depend on changed.
    func changed() { generation.add(1, ordering: .releasing) }

    /// Parses a model reference from a client.
    static func reference(_ text: String) throws(DaemonError) -> ModelReference {
        do { return try ModelReference(parsing: text) } catch { throw DaemonError(error) }
    }

    /// The model a client names, from the cache of resolutions when it can.
    func resolve(text: String) throws(DaemonError) -> ResolvedModel {
        let known = lock.withLock { parsed[text] }
        let reference: ModelReference
        if let known { reference = known } else { reference = try Node.reference(text) }
        if known == nil {
            lock.withLock {
                if parsed.count > 4096 { parsed.removeAll() }
                parsed[text] = reference
            }
        }
        let now = Date()
        counters.withLock { $0.lastUse[reference] = now }
        return try resolve(reference)
    }

    /// The model, from the cache of resolutions, the store, or the local
    /// snapshot. A resolution older than the TTL is still served while a
    /// fresh one is fetched in the background: no read waits for a manifest
    /// GET it does not need.
    func resolve(_ reference: ModelReference, fresh: Bool = false) throws(DaemonError) -> ResolvedModel {
        if !fresh, let known = lock.withLock({ models[reference] }) {
            if ContinuousClock.now - known.at > resolutionTTL { refreshInBackground(reference) }
            return known
        }
        let model: ResolvedModel
        do { model = try blocking { [self] in try await fetchResolution(reference) } } catch { throw DaemonError.from(error) }
        lock.withLock { models[reference] = model }
        changed()
        return model
    }

    private func refreshInBackground(_ reference: ModelReference) {
        guard lock.withLock({ refreshing.insert(reference).inserted }) else { return }
        Task { [self] in
            let model = try? await fetchResolution(reference)
            lock.withLock {
                if let model { models[reference] = model }
                refreshing.remove(reference)
            }
            changed()
        }
    }

    /// The store's manifest (or object listing); when the store fails, the
    /// local snapshot, so that a staged model is served with the store away.
    private func fetchResolution(_ reference: ModelReference) async throws(DaemonError) -> ResolvedModel {
        do {
            let resolved = try await repository.resolve(reference)
            return ResolvedModel(
                reference: reference, blockSize: resolved.manifest.blockSize,
                files: resolved.manifest.files.map { file in
                    ResolvedFile(
                        path: file.path, size: file.size, digest: file.xxh3_128,
                        blockDigests: file.blocks?.compactMap { UInt64($0, radix: 16) }, entry: file)
                },
                resolved: resolved)
        } catch {
            let failure = DaemonError(error)
            guard let local = try? staging.stagedFiles(of: reference) else { throw failure }
            if case .unavailable = failure {
                logger.warning("store unreachable, serving \(reference) from staging: \(failure)")
            }
            return ResolvedModel(
                reference: reference, blockSize: cache.blockSize,
                files: local.map { ResolvedFile(path: $0.path, size: $0.size, digest: $0.digest) }, resolved: nil)
        }
    }

    /// A file of a model, with the client's path checked first: paths are
    /// only ever looked up among the model's files, never joined to a folder.
    /// (A path found among them passed the manifest's own path checks.)
    func file(_ path: String, of model: ResolvedModel) throws(DaemonError) -> ResolvedFile {
        if let file = model.file(path) { return file }
        if let problem = Manifest.pathProblem(path) { throw .invalidArgument("invalid path \(String(reflecting: path)): \(problem)") }
        throw .notFound("\(model.reference) has no file \(path)")
    }

    /// A file's state on both tiers, for `resolve` and `stat`.
    func info(_ file: ResolvedFile) -> FileInfo {
        let digest = file.digest ?? ""
        let nvme: StagedState =
            switch file.digest.map({ staging.state(ofBlob: $0) }) ?? .absent {
            case .staged: .staged
            case .partial: .partial
            case .absent: .absent
            }
        return FileInfo(
            path: file.path, size: file.size, digest: digest, nvme: nvme,
            ramBytes: file.digest.map { cache.residentBytes(blob: $0, size: file.size) } ?? 0)
    }

    func modelInfo(_ model: ResolvedModel) -> ModelInfo {
        ModelInfo(
            model: model.reference.description,
            snapshot: (try? staging.path(of: model.reference)) ?? "",
            pinned: staging.isPinned(model.reference),
            files: model.files.map(info))
    }

    /// Every model staged here or resolved since start.
    func summaries() -> [ModelSummary] {
        var references = Set(staging.stagedModels())
        lock.withLock { references.formUnion(models.keys) }
        return references.sorted { $0.description < $1.description }.compactMap { reference in
            let files: [ResolvedFile]
            if let known = lock.withLock({ models[reference] }) {
                files = known.files
            } else if let local = try? staging.stagedFiles(of: reference) {
                files = local.map { ResolvedFile(path: $0.path, size: $0.size, digest: $0.digest) }
            } else {
                return nil
            }
            let infos = files.map(info)
            return ModelSummary(
                model: reference.description, files: UInt32(files.count), bytes: files.reduce(0) { $0 + $1.size },
                nvmeBytes: zip(files, infos).reduce(0) { $0 + ($1.1.nvme == .staged ? $1.0.size : 0) },
                ramBytes: infos.reduce(0) { $0 + $1.ramBytes }, pinned: staging.isPinned(reference))
        }
    }
}
