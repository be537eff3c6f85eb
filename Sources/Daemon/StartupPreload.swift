import Foundation
import Logging
import Wire

/// One `daemon.preload` entry: "NAME[@REV] [tier=nvme|ram] [pin]".
public struct PreloadSpec: Sendable, Equatable {
    public var model: String
    public var tier: Tier
    public var pin: Bool

    /// Entries were checked when the configuration was loaded.
    public init(_ entry: String) {
        let words = entry.split(separator: " ").map(String.init)
        model = words.first ?? ""
        tier = words.contains("tier=ram") ? .ram : .nvme
        pin = words.contains("pin")
    }
}

/// The models the daemon preloads at start, and how far it got: what `stats`
/// reports as `ready` (true once every listed model is on its tier) so an
/// orchestrator can gate traffic on it.
final class StartupPreloads: @unchecked Sendable {
    enum State: String, Codable, Sendable { case pending, loading, ready, failed }

    struct Status: Codable, Sendable {
        var model: String
        var tier: String
        var pin: Bool
        var state: State
        var error: String?
    }

    private let lock = NSLock()
    private var statuses: [Status]

    init(_ specs: [PreloadSpec]) {
        statuses = specs.map { Status(model: $0.model, tier: $0.tier.description, pin: $0.pin, state: .pending, error: nil) }
    }

    var snapshot: [Status] { lock.withLock { statuses } }
    var ready: Bool { lock.withLock { statuses.allSatisfy { $0.state == .ready } } }

    func set(_ index: Int, _ state: State, error: String? = nil) {
        lock.withLock {
            statuses[index].state = state
            statuses[index].error = error
        }
    }
}

extension Node {
    /// Preloads `specs` one after another on a thread of its own (a failed
    /// one is retried every `retry` until it succeeds or the daemon drains).
    public func preloadInBackground(_ specs: [PreloadSpec], retry: Duration = .seconds(10)) {
        guard !specs.isEmpty else { return }
        let startup = StartupPreloads(specs)
        lock.withLock { startupPreloads = startup }
        Thread { [self] in
            for (index, spec) in specs.enumerated() {
                while !lock.withLock({ draining }) {
                    startup.set(index, .loading)
                    do {
                        _ = try preload(model: spec.model, tier: spec.tier, pin: spec.pin) { _, _ in }
                        startup.set(index, .ready)
                        logger.info("startup preload: \(spec.model) is on \(spec.tier)")
                        break
                    } catch {
                        startup.set(index, .failed, error: "\(error)")
                        logger.error("startup preload of \(spec.model) failed, retrying in \(retry): \(error)")
                        Thread.sleep(forTimeInterval: retry.seconds)
                    }
                }
            }
        }.start()
    }
}
