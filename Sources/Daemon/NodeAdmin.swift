import BlockCache
import Foundation
import Models
import Staging
import Wire

// What administrators ask of the node: bring a model onto a tier, pin it,
// evict it; and the numbers behind `stats`.

extension Node {
    /// Brings a model onto `tier` (nvme: staged; ram: staged, then every block
    /// loaded into the cache as far as its budget goes), pinning it first when
    /// asked. `progress(done, total)` hears about every 100 ms; for `ram` the
    /// counter runs twice: staging, then loading into RAM.
    func preload(
        model text: String, tier: Tier, pin: Bool, progress: (UInt64, UInt64) -> Void
    ) throws(DaemonError) -> ModelInfo {
        let reference = try Node.reference(text)
        var model = try resolve(reference, fresh: true)
        if let report = try waitForPull(of: model, progress: progress) {
            progress(report.bytes, report.bytes)
        }
        model = try resolve(reference, fresh: true)
        if pin { try self.pin(model: text) }
        if tier == .ram { try loadIntoRAM(model, progress: progress) }
        return modelInfo(model)
    }

    /// Every block of every file of a staged model into the cache. Stops
    /// early, without failing, when the cache has no unpinned room left.
    private func loadIntoRAM(_ model: ResolvedModel, progress: (UInt64, UInt64) -> Void) throws(DaemonError) {
        let total = model.bytes
        var done: UInt64 = 0
        var lastReport = ContinuousClock.now
        for file in model.files {
            let source = try source(of: file, in: model)
            for block in 0..<source.blockDigests.count {
                do { try cache.warm(source, block: block) } catch {
                    if case .full = error {
                        logger.notice("RAM tier full while loading \(model.reference): \(done) of \(total) bytes resident")
                        return
                    }
                    throw DaemonError(error)
                }
                done += min(UInt64(source.blockSize), source.size - UInt64(block) * UInt64(source.blockSize))
                if ContinuousClock.now - lastReport > .milliseconds(100) {
                    progress(done, total)
                    lastReport = .now
                }
            }
        }
        progress(total, total)
    }

    /// Pins a staged model: never evicted from staging, its staged files'
    /// pages locked in memory for zero-copy readers (within
    /// `ramCache.lockBytes`), and its RAM blocks kept too if it fits in half
    /// the RAM budget (a bigger pin would starve every other reader of the cache).
    func pin(model text: String) throws(DaemonError) {
        let reference = try Node.reference(text)
        do { try staging.pin(reference) } catch { throw DaemonError(error) }
        lockPages(of: reference)
        let model = try resolve(reference)
        if model.bytes <= cache.statistics.budgetBytes / 2 {
            for digest in model.files.compactMap(\.digest) { cache.pin(blob: digest) }
            lock.withLock { _ = ramPinned.insert(reference) }
        } else {
            logger.notice("pinned \(reference) on NVMe only: \(model.bytes) bytes is over half the RAM budget")
        }
    }

    func unpin(model text: String) throws(DaemonError) {
        let reference = try Node.reference(text)
        do { try staging.unpin(reference) } catch { throw DaemonError(error) }
        pageLocks.unlockPages(of: reference.description)
        if lock.withLock({ ramPinned.remove(reference) }) != nil, let model = try? resolve(reference) {
            for digest in model.files.compactMap(\.digest) { cache.unpin(blob: digest) }
        }
    }

    /// Maps and locks a pinned model's staged files (when `ramCache.lockBytes` allows).
    @discardableResult
    func lockPages(of reference: ModelReference) -> Bool {
        guard pageLocks.limit > 0, let files = try? staging.stagedFiles(of: reference) else { return false }
        return pageLocks.lockPages(
            of: reference.description,
            blobs: files.map { ($0.digest, staging.layout.blob($0.digest), $0.size) })
    }

    /// At start: the pages of every model pinned here, locked again in the background.
    public func lockPinnedModels() {
        guard pageLocks.limit > 0 else { return }
        Thread { [self] in
            for reference in staging.stagedModels() where staging.isPinned(reference) { lockPages(of: reference) }
        }.start()
    }

    /// Drops a model from RAM (`ram`) or from RAM and staging (`nvme`). A
    /// pinned model is refused; readers holding descriptors keep their data.
    func evict(model text: String, tier: Tier) throws(DaemonError) -> String {
        let reference = try Node.reference(text)
        guard !staging.isPinned(reference) else { throw .invalidArgument("\(reference) is pinned: unpin it first") }
        let model = try resolve(reference)
        var blocks = 0
        for digest in model.files.compactMap(\.digest) { blocks += cache.drop(blob: digest) }
        var blobs = 0
        if tier == .nvme {
            do { blobs = try staging.evict(reference).count } catch {
                if case .notStaged = error {} else { throw DaemonError(error) }
            }
            lock.withLock { models[reference] = nil }
            changed()
        }
        return "evicted \(reference): \(blocks) RAM block(s)" + (tier == .nvme ? ", \(blobs) staged blob(s)" : "")
    }

    /// The `stats` reply (docs/protocol.md, "Stats").
    func statistics(connections: ConnectionCounts, requests: RequestCounts) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(report(connections: connections, requests: requests))) ?? Data("{}".utf8), as: UTF8.self)
    }

    /// What `stats` and the metrics endpoint report.
    func report(connections: ConnectionCounts, requests: RequestCounts) -> StatsReport {
        let ram = cache.statistics
        let usage = staging.usage()
        let startup = lock.withLock { startupPreloads }
        let counted = counters.withLock { $0 }
        let models = summaries().map { summary in
            let reference = try? Node.reference(summary.model)
            return StatsReport.Model(
                model: summary.model, files: Int(summary.files), bytes: summary.bytes, nvmeBytes: summary.nvmeBytes,
                ramBytes: summary.ramBytes, pinned: summary.pinned,
                lastUsed: reference.flatMap { counted.lastUse[$0] }?.timeIntervalSince1970)
        }
        let report = StatsReport(
            version: daemonVersion,
            uptimeSeconds: (ContinuousClock.now - started).seconds,
            ready: startup?.ready ?? true,
            preload: startup?.snapshot ?? [],
            ram: .init(
                budgetBytes: ram.budgetBytes, usedBytes: ram.residentBytes, hits: ram.hits, misses: ram.misses,
                evictions: ram.evictions, prefetchedUsed: ram.prefetchedUsed, prefetchedWasted: ram.prefetchedWasted,
                integrityFailures: ram.integrityFailures, bytesFromNVMe: ram.bytesFromNVMe, bytesFromStore: ram.bytesFromStore),
            nvme: .init(
                directory: staging.layout.root, budgetBytes: staging.budget.budgetBytes,
                usedBytes: usage.blobBytes + usage.partialBytes, blobs: usage.blobs, pulling: activePulls,
                lockedBytes: pageLocks.total, lockBytes: pageLocks.limit, bytesFromStore: counted.bytesPulled,
                pullDiskWaitSeconds: counted.pullDiskWait.seconds, evictions: staging.evictedBlobs),
            models: models,
            connections: connections, requests: requests)
        return report
    }
}

public let daemonVersion = "0.1.0"

struct StatsReport: Codable {
    struct RAM: Codable {
        var budgetBytes: UInt64
        var usedBytes: UInt64
        var hits: Int
        var misses: Int
        var evictions: Int
        var prefetchedUsed: Int
        var prefetchedWasted: Int
        var integrityFailures: Int
        var bytesFromNVMe: UInt64
        var bytesFromStore: UInt64
    }
    struct NVMe: Codable {
        var directory: String
        var budgetBytes: UInt64
        var usedBytes: UInt64
        var blobs: Int
        var pulling: Int
        /// Bytes of pinned models' staged files locked in memory, and the limit.
        var lockedBytes: UInt64
        var lockBytes: UInt64
        /// Bytes the node's pulls fetched from the store.
        var bytesFromStore: UInt64
        /// Seconds the node's finished pulls spent waiting for the disk,
        /// summed over their receiving threads (see `PullReport.waitedForDisk`).
        var pullDiskWaitSeconds: Double
        /// Blobs evicted from staging since start.
        var evictions: Int
    }
    struct Model: Codable {
        var model: String
        var files: Int
        var bytes: UInt64
        var nvmeBytes: UInt64
        var ramBytes: UInt64
        var pinned: Bool
        /// Seconds since 1970 when a client last named the model (absent: not since start).
        var lastUsed: Double?
    }
    var version: String
    var uptimeSeconds: Double
    var ready: Bool
    var preload: [StartupPreloads.Status]
    var ram: RAM
    var nvme: NVMe
    var models: [Model]
    var connections: ConnectionCounts
    var requests: RequestCounts
}

/// Connection counters, kept by the server.
struct ConnectionCounts: Codable, Sendable {
    var open = 0
    var accepted = 0
    var rejected = 0
}

/// Request counters, kept by the server.
struct RequestCounts: Codable, Sendable {
    var total = 0
    var read = 0
    var readBytes: UInt64 = 0
    var errors = 0
    var denied = 0
    /// Requests admitted and not answered yet, over all connections.
    var inFlight = 0
    var byOperation: [String: Int] = [:]
    var errorsByCode: [String: Int] = [:]

    mutating func add(_ other: RequestCounts) {
        total += other.total
        read += other.read
        readBytes += other.readBytes
        errors += other.errors
        denied += other.denied
        inFlight += other.inFlight
        byOperation.merge(other.byOperation, uniquingKeysWith: +)
        errorsByCode.merge(other.errorsByCode, uniquingKeysWith: +)
    }
}

extension Duration {
    /// The duration in seconds, for stats, logs and the CLI's reports (which
    /// import this module rather than keep a copy).
    public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
