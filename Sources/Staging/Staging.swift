import Foundation
import Logging
import Models
import ObjectStore

/// The NVMe tier of one staging directory: pulls models into it, verified and
/// resumable, and says where a pulled model's snapshot folder is. Safe to use
/// from several tasks and processes at once (blob downloads are flock'd).
public struct Staging: Sendable {
    public let layout: StagingLayout
    let puller: BlobPuller
    private let snapshots: SnapshotWriter

    /// The downloader's part size is rounded to whole blocks of each model's
    /// block size at pull time.
    public init(
        directory: String, downloader: ParallelDownloader, budget: StagingBudget = .unlimited,
        durability: Durability = .deferred, logger: Logger
    ) {
        layout = StagingLayout(root: directory)
        puller = BlobPuller(
            layout: layout, downloader: downloader, budget: budget, logger: logger, evictions: EvictionCounter(),
            durability: durability)
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
        /// Files that were already staged (or shared with another model).
        public var alreadyStaged: Int
    }

    /// Pulls every file of `model` into blobs/, then publishes its snapshot.
    /// Files go one after another, each in parallel parts.
    public func pull(
        _ model: ModelRepository.Resolved, from repository: ModelRepository, progress: ProgressHandler? = nil
    ) async throws(StagingError) -> PullReport {
        try layout.prepare()
        var report = PullReport(snapshot: "", files: model.manifest.files.count, bytes: 0, downloaded: 0, resumed: 0, alreadyStaged: 0)
        var linked: [(path: String, digest: String)] = []
        let blockSize = model.manifest.blockSize
        var downloader = puller.downloader
        downloader.partSize = max(UInt64(blockSize), downloader.partSize / UInt64(blockSize) * UInt64(blockSize))
        let puller = BlobPuller(
            layout: layout, downloader: downloader, budget: self.puller.budget, logger: self.puller.logger,
            evictions: self.puller.evictions, durability: self.puller.durability)
        for file in model.manifest.files {
            let outcome = try await puller.pull(
                file, blockSize: blockSize, model: model.reference.description,
                key: repository.key(of: file, in: model.reference), from: repository.store, progress: progress)
            linked.append((file.path, outcome.digest))
            report.bytes += file.size
            report.downloaded += outcome.downloaded
            report.resumed += outcome.resumed
            if outcome.alreadyStaged { report.alreadyStaged += 1 }
        }
        report.snapshot = try snapshots.write(model.reference, files: linked)
        return report
    }

    /// How this staging directory publishes blobs (see `Durability`).
    public var durability: Durability { puller.durability }

    /// The snapshot folder of a pulled model; `notStaged` if it was not pulled here.
    public func path(of reference: ModelReference) throws(StagingError) -> String {
        try snapshots.path(of: reference)
    }
}
