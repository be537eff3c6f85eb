import Foundation
import Logging
import Models
import ObjectStore

/// The NVMe tier of one staging directory: pulls models into it, verified and
/// resumable, and says where a pulled model's snapshot folder is. Safe to use
/// from several tasks and processes at once (blob downloads are flock'd).
public struct Staging: Sendable {
    public let layout: StagingLayout
    var puller: BlobPuller
    private let snapshots: SnapshotWriter

    /// The downloader's part size is rounded to whole blocks of each model's
    /// block size at pull time.
    public init(
        directory: String, downloader: ParallelDownloader, budget: StagingBudget = .unlimited,
        durability: Durability = .deferred, directWrites: Bool = true, logger: Logger
    ) {
        layout = StagingLayout(root: directory)
        puller = BlobPuller(
            layout: layout, downloader: downloader, budget: budget, logger: logger, evictions: EvictionCounter(),
            durability: durability, directWrites: directWrites,
            directBuffers: BlobPuller.directBuffers(downloader))
        snapshots = SnapshotWriter(layout: layout)
    }

    /// What a pull did.
    public struct PullReport: Sendable, Equatable {
        public var snapshot: String
        public var files: Int
        public var bytes: UInt64
        /// Fetched from the store now.
        public var downloaded: UInt64
        /// Taken, re-verified, from partials of interrupted pulls.
        public var resumed: UInt64
        /// Taken, re-verified, from memory (a `BlockDonor`): blocks readers had fetched.
        public var donated: UInt64 = 0
        /// Files that were already staged (or shared with another model).
        public var alreadyStaged: Int
        /// How long receiving waited for O_DIRECT writes (`staging.writes:
        /// direct`), summed over the receiving threads: well above zero, the
        /// disk and not the store paced the pull.
        public var waitedForDisk: Duration = .zero
    }

    /// Pulls every file of `model` into blobs/, then publishes its snapshot.
    /// `donor`: where verified blocks of its files may already be in memory
    /// (the daemon's RAM tier, after read-through): they are copied from there,
    /// checked against the manifest again, instead of fetched.
    /// Files go in order, each in parallel parts; the next file starts while
    /// the previous one finishes (its last parts, its publish), sharing the
    /// same `transfer.concurrency` slots at a lower priority, so the link
    /// never idles between files and the model still arrives front to back.
    /// `slots`: parts in flight shared with other work (the daemon's other
    /// pulls and read-through fetches); by default the pull's own.
    public func pull(
        _ model: ModelRepository.Resolved, from repository: ModelRepository, progress: ProgressHandler? = nil,
        slots: PartSlots? = nil, donor: (any BlockDonor)? = nil
    ) async throws(StagingError) -> PullReport {
        try layout.prepare()
        let blockSize = model.manifest.blockSize
        var downloader = puller.downloader
        downloader.partSize = max(UInt64(blockSize), downloader.partSize / UInt64(blockSize) * UInt64(blockSize))
        // A rate cap is per transfer: files overlap only without one.
        let overlapping = downloader.maxBytesPerSecond == 0 && model.manifest.files.count > 1
        downloader.slots = slots ?? (overlapping ? PartSlots(downloader.concurrency) : nil)
        let files = model.manifest.files
        var base = puller
        base.downloader = downloader
        base.donor = donor
        let (template, name) = (base, model.reference.description)
        // Making room for one file never evicts another file of this model.
        let keeping = KeptBlobs(files.compactMap(\.xxh3_128))
        func pullFiles(_ indices: [Int]) async throws(StagingError) -> [BlobPuller.Outcome] {
            do {
                return try await concurrentMap(count: indices.count, concurrency: overlapping ? 2 : 1) { n in
                    let index = indices[n]
                    var puller = template
                    puller.downloader.priority = index
                    return try await puller.pull(
                        files[index], blockSize: blockSize, model: name,
                        key: repository.key(of: files[index], in: model.reference), from: repository.store, progress: progress,
                        keeping: keeping)
                }
            } catch let error as StagingError {
                throw error
            } catch {
                throw .store(model: name, file: "", .cancelled)
            }
        }
        var outcomes = try await pullFiles(Array(files.indices))
        var replaced: [BlobPuller.Outcome] = []  // still counted: their bytes were fetched
        // Another process's pull (which knows nothing of this model) may have
        // evicted a blob this one staged or found: stage it again before the
        // snapshot links it. Twice gone means the node is out of room.
        for attempt in 1...2 {
            let gone = files.indices.filter { !fileExists(layout.blob(outcomes[$0].digest)) }
            if gone.isEmpty { break }
            guard attempt == 1 else {
                throw .noSpace(
                    model: name, file: files[gone[0]].path, needed: files[gone[0]].size,
                    detail: "its blob was evicted by another pull twice while this pull ran")
            }
            puller.logger.notice("\(name): \(gone.count) blob(s) evicted by another pull while this one ran; staging them again")
            // Their bytes were counted done: take them back, so progress stays within the model's size.
            for index in gone { progress?(-Int64(files[index].size)) }
            for (index, outcome) in zip(gone, try await pullFiles(gone)) {
                replaced.append(outcomes[index])
                outcomes[index] = outcome
            }
        }
        var report = PullReport(snapshot: "", files: files.count, bytes: 0, downloaded: 0, resumed: 0, alreadyStaged: 0)
        for (file, outcome) in zip(files, outcomes) {
            report.bytes += file.size
            report.count(outcome)
            if outcome.alreadyStaged { report.alreadyStaged += 1 }
        }
        for outcome in replaced { report.count(outcome) }
        report.snapshot = try snapshots.write(model.reference, files: zip(files, outcomes).map { ($0.path, $1.digest) })
        return report
    }

    /// Parts a pull keeps in flight (`transfer.concurrency`).
    public var transferConcurrency: Int { puller.downloader.concurrency }

    /// How this staging directory publishes blobs (see `Durability`).
    public var durability: Durability { puller.durability }

    /// The snapshot folder of a pulled model; `notStaged` if it was not pulled here.
    public func path(of reference: ModelReference) throws(StagingError) -> String {
        try snapshots.path(of: reference)
    }
}

/// Verified blocks a pull may take instead of fetching them: the daemon's RAM
/// tier holds the blocks read-through brought in, each checked against the
/// manifest on its way in (the pull checks them again).
public protocol BlockDonor: Sendable {
    /// Copies block `block` of the blob named `digest` (xxh3-128) into
    /// `target` (exactly that block's length) if it is at hand; false if not.
    func copy(blob digest: String, block: Int, into target: UnsafeMutableRawBufferPointer) -> Bool
}

extension Staging.PullReport {
    /// Adds what one file's pull fetched, resumed, took from RAM and waited
    /// for: every outcome counts, the replaced ones too (their bytes were fetched).
    fileprivate mutating func count(_ outcome: BlobPuller.Outcome) {
        downloaded += outcome.downloaded
        resumed += outcome.resumed
        donated += outcome.donated
        waitedForDisk += outcome.waitedForDisk
    }
}
