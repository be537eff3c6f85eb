// The `weightcache` command. Subcommands are thin: they parse, load the
// configuration, build the parts they need, and report. `@main` lives here,
// not in main.swift, so that ArgumentParser takes the async path.
import ArgumentParser

@main
struct WeightCache: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "weightcache",
        abstract: "Tiered model-weight storage and cache: object store -> NVMe -> RAM -> your GPU process.",
        subcommands: [
            Serve.self, Ready.self, Preload.self, Pin.self, Unpin.self, Evict.self, Stats.self, List.self,
            Push.self, Pull.self, PathCommand.self, Inspect.self, Verify.self, Fetch.self, Put.self, Hash.self, ShowConfig.self,
        ])
}

/// A failure the user must act on, printed as it is (no usage text).
struct CommandError: Error, CustomStringConvertible {
    var description: String

    init(_ description: String) { self.description = description }
}
