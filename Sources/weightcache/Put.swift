import ArgumentParser
import Foundation
import ObjectStore

struct Put: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Upload a file (multipart, in parallel parts, when large).",
        discussion: "Examples:\n  weightcache put model.safetensors s3://models/llama/main/ --create-bucket\n  weightcache put config.json s3://models/llama/main/config.json")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "Local file.") var file: String
    @Argument(help: "s3://BUCKET/KEY or file:///PATH") var destination: String
    @Flag(help: "Create the bucket first if it does not exist.") var createBucket = false

    func run() async throws {
        let wiring = Wiring(config: try global.load(), logger: try global.logger("weightcache.put"))
        var location = try Location(parsing: destination)
        if location.key.isEmpty || location.key.hasSuffix("/") {
            let name = (file as NSString).lastPathComponent
            location = switch location {
            case .s3(let bucket, let key): .s3(bucket: bucket, key: key + name)
            case .file(let root, _): .file(root: root, key: name)
            }
        }
        if createBucket, case .s3(let bucket, _) = location {
            try await S3Client(settings: wiring.s3Settings(), logger: wiring.logger).createBucket(bucket)
        }
        let store = try wiring.store(for: location)
        let size = (try FileManager.default.attributesOfItem(atPath: file)[.size] as? NSNumber)?.uint64Value ?? 0
        let progress = ProgressDisplay(total: size, files: 1)
        let started = ContinuousClock.now
        progress.start()
        defer { progress.stop() }
        try await store.upload(location.key, fromFile: file, progress: progress.add)
        progress.stop()
        let seconds = (ContinuousClock.now - started).seconds
        print("uploaded \(location), \(formatBytes(size)) in " + String(format: "%.2f s", seconds))
    }
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls", abstract: "List the daemon's models and their share per tier, or the objects under a store prefix.",
        discussion: "Examples:\n  weightcache ls\n  weightcache ls s3://models/llama-3-8b/")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "s3://BUCKET/PREFIX or file:///DIR (omit to ask the daemon)") var location: String?

    func run() async throws {
        guard let location else {
            let models = try global.client().list()
            print("MODEL".padding(toLength: 40, withPad: " ", startingAt: 0) + "FILES".leftPadded(7) + "SIZE".leftPadded(12) + "NVME".leftPadded(12) + "RAM".leftPadded(12) + "  PINNED")
            for m in models {
                print(m.model.padding(toLength: 40, withPad: " ", startingAt: 0) + String(m.files).leftPadded(7)
                    + formatBytes(m.bytes).leftPadded(12) + formatBytes(m.nvmeBytes).leftPadded(12) + formatBytes(m.ramBytes).leftPadded(12)
                    + (m.pinned ? "  yes" : "  no"))
            }
            return
        }
        let wiring = Wiring(config: try global.load(), logger: try global.logger("weightcache.ls"))
        let place = try Location(parsing: location)
        for object in try await wiring.store(for: place).list(prefix: place.key) {
            print("\(String(object.size).leftPadded(14))  \(object.key)")
        }
    }
}
