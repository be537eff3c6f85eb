import ArgumentParser
import Foundation
import Models
import ObjectStore
import Staging

extension Wiring {
    /// The published models under `models.root`.
    func repository() throws -> ModelRepository {
        let root = config.models.root
        if root.hasPrefix("file://") {
            return ModelRepository(store: FileStore(root: String(root.dropFirst(7))), prefix: "")
        }
        let location = try Location(parsing: root)
        return ModelRepository(store: try store(for: location), prefix: location.key)
    }

    func staging() -> Staging {
        Staging(
            directory: config.staging.directory,
            downloader: ParallelDownloader(
                partSize: config.transfer.partSize, concurrency: config.transfer.concurrency,
                maxBytesPerSecond: config.transfer.maxBytesPerSecond),
            budget: StagingBudget(budgetBytes: config.staging.budgetBytes, minFreeBytes: config.staging.minFreeBytes),
            durability: {
                switch config.staging.durability {
                case .deferred: .deferred
                case .immediate: .immediate
                }
            }(),
            directWrites: config.staging.writes == .direct,
            logger: logger)
    }
}

struct Push: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish a model folder as NAME@REV: every file, then the manifest (the commit point).",
        discussion: "Examples:\n  weightcache push ./Llama-3-8B meta/llama-3-8b@v1 --create-bucket\n  weightcache push ./model org/model@main --compress lz4")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Folder of the model's files (a Hugging Face snapshot folder works).") var directory: String
    @Argument(help: "NAME[@REVISION] (revision defaults to main).") var model: String
    @Flag(help: "Create the models root's bucket first if it does not exist.") var createBucket = false
    @Option(help: "Store files compressed: lz4 (one frame per 4 MiB block; pulls stay parallel and resumable).")
    var compress: String?

    func run() async throws {
        let wiring = Wiring(config: try global.load(), logger: try global.logger("weightcache.push"))
        guard compress == nil || compress == "lz4" else {
            throw ValidationError("--compress takes lz4 (the only codec), got \(compress!)")
        }
        let reference = try ModelReference(parsing: model)
        let repository = try wiring.repository()
        if createBucket, case .s3(let bucket, _) = try Location(parsing: wiring.config.models.root) {
            try await S3Client(settings: wiring.s3Settings(), logger: wiring.logger).createBucket(bucket)
        }
        let size = try Self.totalSize(directory)
        let progress = ProgressDisplay(total: size, files: 1)
        progress.start()
        defer { progress.stop() }
        let manifest = try await repository.push(
            directory: directory, as: reference, compress: compress == "lz4", progress: progress.add)
        progress.stop()
        let stored = manifest.files.reduce(0) { $0 + $1.storedSize }
        print(
            "pushed \(reference): \(manifest.files.count) file(s), \(formatBytes(size))"
                + (compress == nil ? "" : String(format: " stored as %@ (ratio %.3f)", formatBytes(stored), Double(size) / Double(max(stored, 1))))
                + " to \(repository.location(of: reference))")
    }

    static func totalSize(_ directory: String) throws -> UInt64 {
        var total: UInt64 = 0
        let walker = FileManager.default.enumerator(atPath: directory)
        while let relative = walker?.nextObject() as? String {
            let attributes = try FileManager.default.attributesOfItem(atPath: directory + "/" + relative)
            if attributes[.type] as? FileAttributeType == .typeRegular {
                total += (attributes[.size] as? NSNumber)?.uint64Value ?? 0
            }
        }
        return total
    }
}

struct Pull: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Bring a model into the staging directory: verified block by block, resumable, then print its folder.",
        discussion: "Without a daemon (or beside one: the staging directory is shared safely).\n\nExamples:\n  weightcache pull meta/llama-3-8b@v1\n  vllm serve \"$(weightcache pull meta/llama-3-8b@v1)\"")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "NAME[@REVISION]") var model: String
    @Flag(help: "fsync every file before it is published, so the pull survives a power cut once it returns (staging.durability=immediate for this pull).")
    var sync = false

    func run() async throws {
        var config = try global.load()
        if sync { config.staging.durability = .immediate }
        let wiring = Wiring(config: config, logger: try global.logger("weightcache.pull"))
        let reference = try ModelReference(parsing: model)
        let repository = try wiring.repository()
        let resolved = try await repository.resolve(reference)
        let total = resolved.manifest.files.reduce(0) { $0 + $1.size }
        let progress = ProgressDisplay(total: total, files: resolved.manifest.files.count)
        progress.start()
        defer { progress.stop() }
        let started = ContinuousClock.now
        let report = try await wiring.staging().pull(resolved, from: repository, progress: progress.add)
        progress.stop()
        let seconds = (ContinuousClock.now - started).seconds
        // The rate from the store, over the whole command: what to compare
        // when sizing transfer.concurrency (docs/operations.md).
        let rate = report.downloaded > 0 && seconds > 0
            ? String(format: ", %.0f MiB/s from the store", Double(report.downloaded) / 1_048_576 / seconds) : ""
        // Receivers blocked on O_DIRECT writes: the disk, not the store,
        // set the pace for that long (docs/operations.md, "Network, CPU, descriptors").
        let waited = report.waitedForDisk.seconds
        let disk = waited >= 0.01 ? String(format: "; receiving waited %.2f s for the disk", waited) : ""
        FileHandle.standardError.write(Data((
            "pulled \(reference) (\(resolved.published ? "manifest" : "no manifest: hashed while downloading")): "
                + "\(report.files) file(s), \(formatBytes(report.bytes)); downloaded \(report.downloaded) bytes, "
                + "resumed \(report.resumed) bytes, \(report.alreadyStaged) file(s) already staged; "
                + String(format: "%.2f s", seconds) + rate + disk + "\n").utf8))
        print(report.snapshot)
    }
}

struct PathCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "path", abstract: "Print the folder of a pulled model (load it with vLLM, transformers, safetensors).",
        discussion: "Exits 3 if the model is not staged here.\n\nExample:\n  ls -l \"$(weightcache path meta/llama-3-8b@v1)\"")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "NAME[@REVISION]") var model: String

    func run() async throws {
        let wiring = Wiring(config: try global.load(), logger: try global.logger("weightcache.path"))
        print(try wiring.staging().path(of: try ModelReference(parsing: model)))
    }
}

struct Pin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pin a staged model revision: never evicted. Through the daemon, or on the staging directory itself with --local.",
        discussion: "Examples:\n  weightcache pin llama-3-8b@main\n  weightcache pin llama-3-8b@main --local --remove")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "NAME[@REVISION]") var model: String
    @Flag(help: "Remove the pin instead (same as `unpin`).") var remove = false
    @Flag(help: "Work on staging.directory directly (no daemon needed).") var local = false

    func run() async throws {
        guard local else {
            let client = try global.client()
            print(remove ? try client.unpin(model) : try client.pin(model))
            return
        }
        let wiring = Wiring(config: try global.load(), logger: try global.logger("weightcache.pin"))
        let reference = try ModelReference(parsing: model)
        if remove { try wiring.staging().unpin(reference) } else { try wiring.staging().pin(reference) }
        print("\(remove ? "unpinned" : "pinned") \(reference)")
    }
}

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the staging directory: hash every blob, quarantine mismatches, remove crash leftovers.",
        discussion: "Exits 2 when a blob was quarantined.\n\nExample:\n  weightcache verify --set staging.directory=/nvme/weightcache")

    @OptionGroup var global: GlobalOptions
    @Flag(help: "Run even while a daemon is using the staging directory.") var force = false

    func run() async throws {
        let wiring = Wiring(config: try global.load(), logger: try global.logger("weightcache.verify"))
        let staging = wiring.staging()
        if staging.isClaimedByDaemon && !force {
            throw CommandError("a daemon is using \(wiring.config.staging.directory): stop it first (it checks staging itself at start), or pass --force")
        }
        let report = try staging.check(logger: wiring.logger)
        print(
            "verified \(report.blobsVerified) blob(s): \(report.quarantined.count) quarantined, "
                + "\(report.removed.count) leftover(s) removed, \(report.resumable) partial(s) kept for resume")
        for path in report.quarantined { print("quarantined: \(path)") }
        if !report.quarantined.isEmpty { throw ExitCode(2) }
    }
}
