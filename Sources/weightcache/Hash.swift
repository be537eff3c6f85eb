import ArgumentParser
import Config
import Foundation
import Integrity

struct Hash: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the xxh3-128 digest of files (the format of xxh128sum).",
        discussion: "Examples:\n  weightcache hash model.safetensors\n  weightcache hash /nvme/llama/* | sort")

    @Argument(help: "Files to hash.") var files: [String]

    func run() async throws {
        for file in files {
            print("\(try Digest128.ofFile(atPath: file))  \(file)")
        }
    }
}

struct ShowConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Print the effective configuration (secrets masked) and where it came from.",
        discussion: "Examples:\n  weightcache config\n  WEIGHTCACHE_TRANSFER_CONCURRENCY=16 weightcache config --set ramCache.policy=lru")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        let loader = ConfigurationLoader()
        let path = loader.locate(explicit: global.config)
        print("# file: \(path ?? "(none: built-in defaults)"); environment and flags applied")
        print(try global.load().renderedJSON())
    }
}
