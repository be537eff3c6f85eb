import BlockCache
import Foundation
import Logging
import Models
import Staging

// Pulls run as tasks, one per model however many requests want it (and the
// staging tier's blob locks make that one per blob across processes too).
// A pull's intent is written down before it starts and struck out when it
// ends, so a daemon that stops mid-pull (SIGTERM, or kill -9) finds it on
// the next start and resumes it from the partial's verified blocks.

/// A pull in flight: its task and a byte counter for progress.
final class PullJob: @unchecked Sendable {
    typealias Work = @Sendable (_ progress: @escaping @Sendable (Int64) -> Void) async throws -> Staging.PullReport

    let total: UInt64
    private let lock = NSLock()
    private var landed: Int64 = 0
    private var running: Task<Staging.PullReport, any Error>?
    private var waitedOn = false

    /// Waits before the work starts; `urgent()` says to stop waiting.
    typealias HoldBack = @Sendable (_ urgent: @escaping @Sendable () -> Bool) async -> Void

    /// Starts `work` (after `holdBack`), counting the bytes it reports.
    init(total: UInt64, holdBack: HoldBack? = nil, work: @escaping Work) {
        self.total = total
        let task = Task {
            await holdBack?({ self.isWaitedOn })
            return try await work { bytes in self.add(bytes) }
        }
        lock.withLock { running = task }
    }

    var task: Task<Staging.PullReport, any Error> { lock.withLock { running! } }

    /// Bytes staged so far (files already staged count whole).
    var done: UInt64 { lock.withLock { UInt64(max(0, landed)) } }

    private func add(_ bytes: Int64) { lock.withLock { landed += bytes } }

    /// Someone waits for this pull to finish (`open`, `preload`): it must not
    /// hold back for readers any longer.
    var isWaitedOn: Bool { lock.withLock { waitedOn } }
    func markWaitedOn() { lock.withLock { waitedOn = true } }
}

/// The models whose pulls are under way, in a small JSON file in staging.
/// One per node (the file's only writer in the process).
final class PendingPulls: @unchecked Sendable {
    let path: String
    private let lock = NSLock()

    init(path: String) {
        self.path = path
    }

    func list() -> [ModelReference] {
        guard let data = FileManager.default.contents(atPath: path),
            let names = try? JSONDecoder().decode([String].self, from: data)
        else { return [] }
        return names.compactMap { try? ModelReference(parsing: $0) }
    }

    func add(_ reference: ModelReference) { update { $0.insert(reference.description) } }
    func remove(_ reference: ModelReference) { update { $0.remove(reference.description) } }

    private func update(_ change: (inout Set<String>) -> Void) {
        lock.withLock {
            var names = Set(list().map(\.description))
            change(&names)
            let data = (try? JSONEncoder().encode(names.sorted())) ?? Data("[]".utf8)
            let temporary = path + ".tmp"
            _ = FileManager.default.createFile(atPath: temporary, contents: data)
            _ = rename(temporary, path)
        }
    }
}

extension Node {
    /// The model's pull, started if none is running. Never throws: a failed
    /// pull is seen by whoever waits for it. `afterReaders`: a cold read
    /// started it; it waits (a few seconds at most) until read-through
    /// fetches go quiet (see `ReadThroughActivity`).
    @discardableResult
    func startPull(of model: ResolvedModel, afterReaders: Bool = false) -> PullJob? {
        guard let resolved = model.resolved else { return nil }  // from the snapshot: staged already
        lock.lock()
        defer { lock.unlock() }
        if let job = pulls[model.reference] { return job }
        let staging = self.staging
        let repository = self.repository
        let logger = self.logger
        let pending = self.pending
        let reference = model.reference
        let slots = transferSlots
        let cache = self.cache
        let readers = readThrough
        pending.add(reference)
        var holdBack: PullJob.HoldBack?
        if afterReaders {
            readers.touch()
            holdBack = { urgent in
                let since = ContinuousClock.now
                await readers.waitUntilQuiet(for: .milliseconds(150), atMost: .seconds(3), urgent: urgent)
                logger.info("pulling \(reference) in the background, after \(ContinuousClock.now - since) held back for read-through")
            }
        }
        let job = PullJob(total: model.bytes, holdBack: holdBack) { progress in
            let started = ContinuousClock.now
            do {
                let report = try await staging.pull(
                    resolved, from: repository, progress: progress, slots: slots, donor: RAMTierDonor(cache: cache))
                pending.remove(reference)
                self.counters.withLock {
                    $0.bytesPulled += report.downloaded
                    $0.pullDiskWait += report.waitedForDisk
                }
                logger.info(
                    "pulled \(reference): \(report.files) file(s), \(report.bytes) bytes; downloaded \(report.downloaded), resumed \(report.resumed), from RAM \(report.donated), in \(ContinuousClock.now - started); receiving waited \(report.waitedForDisk) for the disk")
                return report
            } catch {
                if Task.isCancelled {
                    logger.info("pull of \(reference) stopped; its partials stay for the next start")
                } else {
                    logger.error("pull of \(reference) failed: \(DaemonError.from(error))")
                }
                throw error
            }
        }
        pulls[reference] = job
        // A strong capture: the node lives as long as the daemon, and a weak
        // reference would give it a side table for good, which puts every
        // retain and release of the node (several per read request) on the
        // runtime's slow path (measured: 3% of the daemon's CPU under 4 KiB reads).
        Task { [self] in
            _ = await job.task.result
            lock.withLock { if pulls[reference] === job { pulls[reference] = nil } }
            changed()  // the files may be staged now: read them from NVMe
        }
        return job
    }

    /// Waits for the model's pull (starting it if needed).
    func waitForPull(of model: ResolvedModel, progress: (UInt64, UInt64) -> Void = { _, _ in }) throws(DaemonError) -> Staging.PullReport? {
        guard let job = startPull(of: model) else { return nil }
        job.markWaitedOn()
        let semaphore = DispatchSemaphore(value: 0)
        Task {
            _ = await job.task.result
            semaphore.signal()
        }
        while semaphore.wait(timeout: .now() + .milliseconds(100)) == .timedOut {
            if lock.withLock({ draining }) { throw .shuttingDown }
            progress(job.done, job.total)
        }
        progress(job.done, job.total)
        do { return try blocking { try await job.task.value } } catch { throw DaemonError.from(error) }
    }

    /// Pulls that a previous run left unfinished, restarted in the background.
    public func resumeParkedPulls() {
        for reference in parked {
            do {
                let model = try resolve(reference)
                logger.notice("resuming the pull of \(reference) left by a previous run")
                startPull(of: model)
            } catch {
                logger.warning("cannot resume the pull of \(reference): \(error)")
            }
        }
    }

    /// Pulls in flight now.
    var activePulls: Int { lock.withLock { pulls.count } }

    /// Cancels the pulls in flight and waits, up to `timeout`, until they have
    /// stopped, so that none is still writing while the process exits (one
    /// that was crashed the daemon at exit: SIGSEGV, twice in the peers
    /// benchmark). Their partials, block maps and `daemon-pulls.json` entries
    /// stay: the next start resumes them.
    public func stopPulls(timeout: Duration) {
        let jobs = lock.withLock { Array(pulls.values) }
        guard !jobs.isEmpty else { return }
        for job in jobs { job.task.cancel() }
        let stopped = DispatchSemaphore(value: 0)
        Task {
            for job in jobs { _ = await job.task.result }
            stopped.signal()
        }
        if stopped.wait(timeout: .now() + .milliseconds(Int(timeout.seconds * 1000))) == .timedOut {
            logger.warning("\(jobs.count) pull(s) still stopping after \(timeout); exiting anyway")
        } else {
            logger.info("parked \(jobs.count) pull(s) for the next start")
        }
    }
}

/// The RAM tier as a pull's `BlockDonor`: blocks that read-through fetched
/// (keyed by the blob's xxh3-128, as the pull names it) are copied from the
/// arena instead of fetched again.
struct RAMTierDonor: BlockDonor {
    let cache: BlockCache

    func copy(blob digest: String, block: Int, into target: UnsafeMutableRawBufferPointer) -> Bool {
        cache.withResident(blob: digest, block: block) { bytes in
            target.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<min(bytes.count, target.count)]))
        }
    }
}
