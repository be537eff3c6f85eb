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

    public var defaultValueDescription: String { description }
    public static var allValueStrings: [String] { allCases.map(\.description) }
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
    @Flag(help: "One JSON event per line on stdout (progress, then done) instead of the progress bar.") var json = false

    func run() async throws {
        let client = try global.client()
        for model in models {
            if json {
                var last = ContinuousClock.now - .seconds(1)
                let info = try client.preload(model, tier: tier, pin: pin) { done, total in
                    guard done == total || ContinuousClock.now - last >= .milliseconds(500) else { return }
                    last = .now
                    Self.emit(["event": "progress", "model": model, "tier": tier.description, "done": done, "total": total])
                }
                Self.emit([
                    "event": "done", "model": info.model, "tier": tier.description, "files": info.files.count,
                    "bytes": info.files.reduce(0) { $0 + $1.size }, "pinned": info.pinned, "snapshot": info.snapshot,
                ])
                continue
            }
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

    static func emit(_ event: [String: Any]) {
        guard let data = try? JSONSerialization.data(withJSONObject: event, options: [.sortedKeys, .withoutEscapingSlashes]) else { return }
        print(String(decoding: data, as: UTF8.self))
        fflush(nil)  // every event out at once, for a reader of the pipe
    }
}

struct Stats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The daemon's statistics: per tier and per model, as a table or JSON.",
        discussion: """
            Per tier: capacity, used, hit ratio, bytes in and out, evictions. Per model: its bytes, \
            the share of them in RAM and on NVMe, pinned, last use. --json prints the daemon's \
            stats document as it is (docs/protocol.md, "Stats").

            Examples:
              weightcache stats
              weightcache stats --json | jq .ram.hits
            """)

    @OptionGroup var global: GlobalOptions
    @Flag(help: "The raw JSON document.") var json = false

    func run() async throws {
        let text = try global.client().stats()
        if json {
            print(text)
            return
        }
        guard let stats = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw CommandError("unreadable stats from the daemon")
        }
        print(Self.render(stats))
    }

    static func render(_ stats: [String: Any]) -> String {
        func number(_ object: [String: Any]?, _ key: String) -> UInt64 { (object?[key] as? NSNumber)?.uint64Value ?? 0 }
        func ratio(_ part: UInt64, _ whole: UInt64) -> String { whole == 0 ? "-" : String(format: "%.1f%%", 100 * Double(part) / Double(whole)) }
        let ram = stats["ram"] as? [String: Any]
        let nvme = stats["nvme"] as? [String: Any]
        let requests = stats["requests"] as? [String: Any]
        let (hits, misses) = (number(ram, "hits"), number(ram, "misses"))
        let (fromNVMe, fromStore) = (number(ram, "bytesFromNVMe"), number(ram, "bytesFromStore"))
        var lines: [String] = []
        let uptime = (stats["uptimeSeconds"] as? NSNumber)?.doubleValue ?? 0
        lines.append("weightcache \(stats["version"] ?? "?"), up \(Int(uptime)) s, \((stats["ready"] as? Bool ?? false) ? "ready" : "not ready")")
        lines.append("")
        let header = ["TIER", "CAPACITY", "USED", "HIT RATIO", "BYTES IN", "BYTES OUT", "EVICTIONS"]
        let rows: [[String]] = [
            ["ram", formatBytes(number(ram, "budgetBytes")), formatBytes(number(ram, "usedBytes")), ratio(hits, hits + misses),
             formatBytes(fromNVMe + fromStore), formatBytes(number(requests, "readBytes")), String(number(ram, "evictions"))],
            ["nvme", formatBytes(number(nvme, "budgetBytes")), formatBytes(number(nvme, "usedBytes")), ratio(fromNVMe, fromNVMe + fromStore),
             formatBytes(number(nvme, "bytesFromStore")), formatBytes(fromNVMe), String(number(nvme, "evictions"))],
        ]
        lines += table(header, rows)
        lines.append("(ram hit ratio: reads served from RAM; nvme: RAM misses served from NVMe rather than the store)")
        let models = stats["models"] as? [[String: Any]] ?? []
        if !models.isEmpty {
            lines.append("")
            let now = Date().timeIntervalSince1970
            lines += table(
                ["MODEL", "SIZE", "IN RAM", "ON NVME", "PINNED", "LAST USE"],
                models.map { m in
                    let bytes = number(m, "bytes")
                    let last = (m["lastUsed"] as? NSNumber).map { "\(Int(now - $0.doubleValue)) s ago" } ?? "-"
                    return [m["model"] as? String ?? "?", formatBytes(bytes), ratio(number(m, "ramBytes"), bytes),
                        ratio(number(m, "nvmeBytes"), bytes), (m["pinned"] as? Bool ?? false) ? "yes" : "no", last]
                })
        }
        return lines.joined(separator: "\n")
    }

    /// Columns padded to their widest cell; the first left-aligned, the rest right.
    static func table(_ header: [String], _ rows: [[String]]) -> [String] {
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        return ([header] + rows).map { row in
            row.enumerated().map { column, cell in
                column == 0 ? cell.padding(toLength: widths[0], withPad: " ", startingAt: 0) : cell.leftPadded(widths[column])
            }.joined(separator: "  ")
        }
    }
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
        let json: String
        do { json = try global.client().stats() } catch {
            // A probe wants "not ready" (1) whatever the reason, the reason on stderr.
            if !quiet { print("not ready: \(error)") }
            throw ExitCode(1)
        }
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
