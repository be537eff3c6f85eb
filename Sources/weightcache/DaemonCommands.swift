import ArgumentParser
import Foundation
import WeightCacheClient
import Wire

// Commands that talk to a running daemon over its socket (`weightcache serve`).

extension GlobalOptions {
    /// A greeted connection to the daemon at `socket.path`.
    func client() throws -> DaemonClient {
        try DaemonClient(path: try load().socket.path)
    }
}

extension Tier: ExpressibleByArgument {
    public init?(argument: String) {
        switch argument {
        case "nvme": self = .nvme
        case "ram": self = .ram
        default: return nil
        }
    }
}

struct Preload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask the daemon to bring models onto a tier (and pin them), with progress.",
        discussion: """
            Examples:
              weightcache preload llama-3-8b@main
              weightcache preload llama-3-8b@main mistral-7b --tier ram --pin
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "NAME[@REVISION]...") var models: [String]
    @Option(help: "nvme (staged on local disk) or ram (staged and loaded into the RAM cache).") var tier: Tier = .nvme
    @Flag(help: "Pin the models: never evicted.") var pin = false

    func run() async throws {
        let client = try global.client()
        for model in models {
            var display: ProgressDisplay?
            var last: UInt64 = 0
            let info = try client.preload(model, tier: tier, pin: pin) { done, total in
                if display == nil {
                    display = ProgressDisplay(total: total, files: 1)
                    display?.start()
                }
                if done < last {  // the RAM phase restarts the count
                    display?.stop()
                    display = ProgressDisplay(total: total, files: 1)
                    display?.start()
                    last = 0
                }
                display?.add(Int64(done - last))
                last = done
            }
            display?.stop()
            let bytes = info.files.reduce(0) { $0 + $1.size }
            print("\(info.model): \(info.files.count) file(s), \(formatBytes(bytes)) on \(tier)\(info.pinned ? ", pinned" : "") -> \(info.snapshot)")
        }
    }
}

struct Stats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The daemon's statistics (JSON).",
        discussion: "Example:\n  weightcache stats | jq .ram")

    @OptionGroup var global: GlobalOptions

    func run() async throws { print(try global.client().stats()) }
}

struct Unpin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask the daemon to unpin a model revision.", discussion: "Example:\n  weightcache unpin llama-3-8b@main")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "NAME[@REVISION]") var model: String

    func run() async throws { print(try global.client().unpin(model)) }
}

struct Evict: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask the daemon to drop a model from RAM (--tier ram) or from RAM and staging (default).",
        discussion: "Examples:\n  weightcache evict old-model@v1\n  weightcache evict big-model --tier ram")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "NAME[@REVISION]") var model: String
    @Option(help: "nvme (RAM and staging) or ram (RAM only).") var tier: Tier = .nvme

    func run() async throws { print(try global.client().evict(model, tier: tier)) }
}

struct Ready: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Exit 0 when the daemon is up and every model of daemon.preload is on its tier, 1 otherwise (a readiness probe).",
        discussion: "Examples:\n  weightcache ready && echo serving\n  until weightcache ready --quiet; do sleep 2; done")

    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print nothing; only the exit status.") var quiet = false

    func run() async throws {
        let json = try global.client().stats()
        guard let stats = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] else {
            throw CommandError("unreadable stats from the daemon")
        }
        let ready = stats["ready"] as? Bool ?? false
        if !quiet {
            let preloads = stats["preload"] as? [[String: Any]] ?? []
            print(ready ? "ready" : "not ready")
            for entry in preloads {
                let error = (entry["error"] as? String).map { ": \($0)" } ?? ""
                print("  \(entry["model"] ?? "?") on \(entry["tier"] ?? "?"): \(entry["state"] ?? "?")\(error)")
            }
        }
        if !ready { throw ExitCode(1) }
    }
}
