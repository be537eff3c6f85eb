import Foundation
import Synchronization

/// Shows transfer progress on stderr: a redrawn bar on a terminal, a plain
/// line every few seconds otherwise (logs and CI). Bytes are counted with an
/// atomic add from any thread; drawing runs on its own timer task.
final class ProgressDisplay: Sendable {
    private let total: UInt64
    private let files: Int
    private let done = Atomic<Int64>(0)
    private let filesDone = Atomic<Int>(0)
    private let task = Mutex<Task<Void, Never>?>(nil)
    private let isTerminal = isatty(STDERR_FILENO) == 1
    private let started = ContinuousClock.now

    init(total: UInt64, files: Int) {
        self.total = total
        self.files = files
    }

    var add: @Sendable (Int64) -> Void {
        { [self] delta in _ = done.add(delta, ordering: .relaxed) }
    }

    func fileDone(_ path: String) {
        _ = filesDone.add(1, ordering: .relaxed)
        if !isTerminal && files > 1 { FileHandle.standardError.write(Data("done \(path)\n".utf8)) }
    }

    func start() {
        let interval: Duration = isTerminal ? .milliseconds(100) : .seconds(5)
        task.withLock {
            $0 = Task { [self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval)
                    if Task.isCancelled { break }
                    draw(final: false)
                }
            }
        }
    }

    /// Stops drawing; on a terminal, leaves the last bar in place. Idempotent.
    func stop() {
        guard let running = task.withLock({ t -> Task<Void, Never>? in defer { t = nil }; return t }) else { return }
        running.cancel()
        if isTerminal { draw(final: true) }
    }

    private func draw(final: Bool) {
        let bytes = UInt64(max(0, done.load(ordering: .relaxed)))
        let seconds = max((ContinuousClock.now - started).seconds, 1e-3)
        let rate = Double(bytes) / seconds
        let fraction = total == 0 ? 1 : min(1, Double(bytes) / Double(total))
        let eta = rate > 0 ? Double(total - min(bytes, total)) / rate : 0
        var line = "\(formatBytes(bytes)) / \(formatBytes(total))  \(formatBytes(UInt64(rate)))/s"
        if files > 1 { line += "  files \(filesDone.load(ordering: .relaxed))/\(files)" }
        if isTerminal {
            let width = 30
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            let text = "\r[\(bar)] \(String(format: "%5.1f%%", fraction * 100))  \(line)  ETA \(Int(eta.rounded()))s\u{1B}[K"
            FileHandle.standardError.write(Data((text + (final ? "\n" : "")).utf8))
        } else {
            FileHandle.standardError.write(Data("progress \(String(format: "%.1f%%", fraction * 100))  \(line)\n".utf8))
        }
    }
}

func formatBytes(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.2f %@", value, units[unit])
}


extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
