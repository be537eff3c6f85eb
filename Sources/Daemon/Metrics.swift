import Foundation
import Prometheus

/// The daemon's Prometheus metrics: every name in one table (docs/metrics.md
/// lists them, and a test checks that it does). The figures already live in
/// the tiers' own counters; on each scrape they are copied into the registry
/// (counters advance by what happened since the last scrape), so the hot
/// paths pay nothing for metrics. The S3 client's request histograms come
/// through swift-metrics into the same registry (`S3Metrics`).
final class DaemonMetrics: @unchecked Sendable {
    static let counters: [(name: String, help: String, value: @Sendable (StatsReport) -> Int64)] = [
        ("weightcache_ram_hits_total", "Reads of blocks found in the RAM tier.", { Int64($0.ram.hits) }),
        ("weightcache_ram_misses_total", "Reads of blocks loaded into RAM first.", { Int64($0.ram.misses) }),
        ("weightcache_ram_evictions_total", "Blocks evicted from the RAM tier.", { Int64($0.ram.evictions) }),
        ("weightcache_ram_prefetched_used_total", "Blocks read ahead and then read.", { Int64($0.ram.prefetchedUsed) }),
        ("weightcache_ram_prefetched_wasted_total", "Blocks read ahead and evicted unread.", { Int64($0.ram.prefetchedWasted) }),
        ("weightcache_ram_integrity_failures_total", "Blocks that failed their xxh3-64 check on the way into RAM.", { Int64($0.ram.integrityFailures) }),
        ("weightcache_ram_bytes_from_nvme_total", "Bytes loaded into RAM from staged files.", { Int64($0.ram.bytesFromNVMe) }),
        ("weightcache_ram_bytes_from_store_total", "Bytes loaded into RAM straight from the store (read-through).", { Int64($0.ram.bytesFromStore) }),
        ("weightcache_nvme_evictions_total", "Blobs evicted from staging (to make room, or by evict).", { Int64($0.nvme.evictions) }),
        ("weightcache_nvme_bytes_pulled_total", "Bytes the daemon's pulls fetched from the store (rate: pull throughput).", { Int64($0.nvme.bytesFromStore) }),
        ("weightcache_read_bytes_total", "Bytes returned by read requests.", { Int64($0.requests.readBytes) }),
        ("weightcache_requests_denied_total", "Requests refused by access control.", { Int64($0.requests.denied) }),
        ("weightcache_connections_accepted_total", "Socket connections accepted.", { Int64($0.connections.accepted) }),
        ("weightcache_connections_rejected_total", "Socket connections refused at the connection limit.", { Int64($0.connections.rejected) }),
    ]

    /// Counters of seconds (fractional, so not in `counters`).
    static let secondsCounters: [(name: String, help: String, value: @Sendable (StatsReport) -> Double)] = [
        ("weightcache_nvme_pull_disk_wait_seconds_total",
         "Seconds the daemon's finished pulls waited for the disk (receivers blocked on queued O_DIRECT writes, summed over them).",
         { $0.nvme.pullDiskWaitSeconds }),
    ]

    static let gauges: [(name: String, help: String, value: @Sendable (StatsReport) -> Double)] = [
        ("weightcache_ram_budget_bytes", "Size of the RAM tier's arena.", { Double($0.ram.budgetBytes) }),
        ("weightcache_ram_used_bytes", "Bytes of blocks resident in RAM.", { Double($0.ram.usedBytes) }),
        ("weightcache_nvme_budget_bytes", "Staging budget.", { Double($0.nvme.budgetBytes) }),
        ("weightcache_nvme_used_bytes", "Bytes of blobs and partials in staging.", { Double($0.nvme.usedBytes) }),
        ("weightcache_nvme_blobs", "Verified blobs in staging.", { Double($0.nvme.blobs) }),
        ("weightcache_nvme_locked_bytes", "Bytes of pinned models' staged files locked in memory.", { Double($0.nvme.lockedBytes) }),
        ("weightcache_pulls_active", "Pulls in progress (the pull queue's depth).", { Double($0.nvme.pulling) }),
        ("weightcache_requests_in_flight", "Requests admitted and not yet answered, over all connections.", { Double($0.requests.inFlight) }),
        ("weightcache_socket_clients", "Open socket connections.", { Double($0.connections.open) }),
        ("weightcache_ready", "1 once every daemon.preload model is on its tier, else 0.", { $0.ready ? 1 : 0 }),
        ("weightcache_uptime_seconds", "Seconds since the daemon started.", { $0.uptimeSeconds }),
    ]

    /// Labelled counters: requests by operation, errors by code.
    static let requests = "weightcache_requests_total"
    static let requestErrors = "weightcache_request_errors_total"

    let registry: PrometheusCollectorRegistry
    private let lock = NSLock()
    private var last: [String: Int64] = [:]
    private var lastSeconds: [String: Double] = [:]

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    /// Copies a report into the registry.
    func update(from report: StatsReport) {
        lock.lock()
        defer { lock.unlock() }
        for counter in Self.counters { advance(registry.makeCounter(name: counter.name, help: counter.help), key: counter.name, to: counter.value(report)) }
        for counter in Self.secondsCounters {
            let made = registry.makeCounter(name: counter.name, help: counter.help)  // listed from the first scrape, at 0
            Self.advance(to: counter.value(report), key: counter.name, last: &lastSeconds) { made.increment(by: $0) }
        }
        for gauge in Self.gauges { registry.makeGauge(name: gauge.name, help: gauge.help).set(to: gauge.value(report)) }
        for (operation, count) in report.requests.byOperation {
            let counter = registry.makeCounter(name: Self.requests, labels: [("operation", operation)], help: "Requests, by operation.")
            advance(counter, key: Self.requests + operation, to: Int64(count))
        }
        for (code, count) in report.requests.errorsByCode {
            let counter = registry.makeCounter(name: Self.requestErrors, labels: [("code", code)], help: "Requests that ended in an error, by code.")
            advance(counter, key: Self.requestErrors + code, to: Int64(count))
        }
    }

    private func advance(_ counter: Counter, key: String, to value: Int64) {
        Self.advance(to: value, key: key, last: &last) { counter.increment(by: $0) }
    }

    /// Moves a counter on by what `value` gained since the last scrape
    /// (`last[key]`), never back: whole counts and seconds alike.
    private static func advance<Value: Comparable & AdditiveArithmetic>(
        to value: Value, key: String, last: inout [String: Value], by increment: (Value) -> Void
    ) {
        let previous = last[key] ?? .zero
        if value > previous { increment(value - previous) }
        last[key] = max(value, previous)
    }

    /// The text exposition of every metric.
    func exposition() -> [UInt8] {
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }
}
