import Foundation
import Logging
import ServiceLifecycle

/// The daemon as a swift-service-lifecycle `Service`: starts the server and
/// the parked pulls, runs until graceful shutdown (SIGTERM/SIGINT through the
/// service group), then drains.
public struct DaemonService: Service {
    let server: Server
    let node: Node

    public init(server: Server, node: Node) {
        self.server = server
        self.node = node
    }

    public func run() async throws {
        try server.start()
        node.resumeParkedPulls()
        node.restoreWarmSetAndKeepSaving()
        try? await gracefulShutdown()
        // drain blocks (it waits on connections): keep it off the cooperative pool.
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            Thread {
                server.drain()
                node.stopPulls(timeout: .seconds(10))
                node.saveWarmSet()
                node.settleStaging()
                done.resume()
            }.start()
        }
    }
}
