import ArgumentParser
import Foundation
import ObjectStore

struct Fetch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Download an object, or every object under a prefix, with parallel ranged reads.",
        discussion: """
            SOURCE is s3://BUCKET/KEY or s3://BUCKET/PREFIX/ (or file:///PATH). For one object, DEST is \
            the file to write (or an existing directory to write into). For a prefix, DEST is a \
            directory and the keys' paths under the prefix are kept.

            Examples:
              weightcache fetch s3://models/llama/main/model.safetensors /nvme/model.safetensors
              weightcache fetch s3://models/llama/main/ /nvme/llama --sync
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "s3://BUCKET/KEY-or-PREFIX or file:///PATH") var source: String
    @Argument(help: "Destination file or directory.") var destination: String
    @Flag(help: "fsync each file before renaming it into place (durable against power loss).") var sync = false

    func run() async throws {
        let wiring = Wiring(config: try global.load(), logger: try global.logger("weightcache.fetch"))
        let location = try Location(parsing: source)
        let store = try wiring.store(for: location)
        let plan = try await FetchPlan.make(store: store, location: location, destination: destination)
        let progress = ProgressDisplay(total: plan.totalBytes, files: plan.items.count)
        let started = ContinuousClock.now
        progress.start()
        defer { progress.stop() }
        for item in plan.items {
            try FileManager.default.createDirectory(
                atPath: (item.destination as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            var downloader = wiring.downloader
            downloader.syncBeforeRename = sync
            _ = try await downloader.download(
                item.key, from: store, to: item.destination, progress: progress.add)
            progress.fileDone(item.destination)
        }
        progress.stop()
        let seconds = (ContinuousClock.now - started).seconds
        print(
            "fetched \(plan.items.count) object(s), \(formatBytes(plan.totalBytes)) in "
                + String(format: "%.2f s (%@/s)", seconds, formatBytes(UInt64(Double(plan.totalBytes) / max(seconds, 1e-9)))))
    }
}

/// Which objects go to which files.
struct FetchPlan {
    struct Item {
        var key: String
        var destination: String
    }

    var items: [Item]
    var totalBytes: UInt64

    static func make(store: any ObjectStore, location: Location, destination: String) async throws -> FetchPlan {
        let key = location.key
        if !key.isEmpty && !key.hasSuffix("/"), let object = try await headIfPresent(store, key) {
            var isDirectory: ObjCBool = false
            let intoDirectory = destination.hasSuffix("/")
                || (FileManager.default.fileExists(atPath: destination, isDirectory: &isDirectory) && isDirectory.boolValue)
            let file = intoDirectory ? destination + "/" + (key as NSString).lastPathComponent : destination
            return FetchPlan(items: [Item(key: key, destination: file)], totalBytes: object.size)
        }
        // Not an object: a prefix.
        let prefix = key.isEmpty || key.hasSuffix("/") ? key : key + "/"
        let objects = try await store.list(prefix: prefix).filter { !$0.key.hasSuffix("/") }
        guard !objects.isEmpty else {
            throw CommandError("nothing at \(location): no such object and no objects under \(prefix.isEmpty ? "it" : prefix)")
        }
        var items: [Item] = []
        for object in objects {
            let relative = String(object.key.dropFirst(prefix.count))
            let parts = relative.split(separator: "/", omittingEmptySubsequences: false)
            guard !parts.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
                throw CommandError("refusing key \(String(reflecting: object.key)): its path would leave \(destination)")
            }
            items.append(Item(key: object.key, destination: destination + "/" + relative))
        }
        return FetchPlan(items: items, totalBytes: objects.reduce(0) { $0 + $1.size })
    }

    /// The object at `key`, or nil if there is none (so it may be a prefix).
    private static func headIfPresent(_ store: any ObjectStore, _ key: String) async throws(ObjectStoreError) -> ObjectInfo? {
        do {
            return try await store.head(key)
        } catch {
            if case .notFound = error { return nil }
            throw error
        }
    }
}
