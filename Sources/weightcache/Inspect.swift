import ArgumentParser
import BlockCache
import Compression
import Config
import Foundation
import Models
import ObjectStore

struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Size a model from its safetensors headers alone: parameters, dtypes, bytes, GPUs needed.",
        discussion: """
            Reads only each shard's header, with two small ranged GETs per shard (nothing else is \
            downloaded), and prints the parameter count, the dtype mix, the bytes of weights as \
            stored and at bf16, int8 and int4, and how many GPUs of --gpu-memory each needs with \
            --headroom of every GPU left for the KV cache.

            Examples:
              weightcache inspect meta/llama-3-8b@v1
              weightcache inspect s3://models/hf/Qwen2.5-72B/ --gpu-memory 80GB --headroom 0.3
              weightcache inspect meta/llama-3-8b@v1 --json
            """)

    @OptionGroup var global: GlobalOptions
    @Argument(help: "NAME[@REVISION] under models.root, or an s3://BUCKET/PREFIX/ (file:///DIR) of safetensors files.")
    var model: String
    @Option(help: "Memory of one GPU (a byte size).") var gpuMemory = "80GB"
    @Option(help: "Share of each GPU kept for the KV cache and activations, 0 to 0.9.") var headroom = 0.2
    @Flag(help: "One JSON object instead of the table.") var json = false

    func run() async throws {
        guard (0...0.9).contains(headroom) else { throw ValidationError("--headroom must be between 0 and 0.9") }
        guard let memory = ByteSize.parse(gpuMemory), memory > 0 else { throw ValidationError("--gpu-memory: not a byte size: \(gpuMemory)") }
        let wiring = Wiring(config: try global.load(), logger: try global.logger("weightcache.inspect"))
        let shards = try await Self.shards(of: model, wiring: wiring)
        guard !shards.isEmpty else { throw CommandError("\(model) has no .safetensors files") }
        var sizing = ModelSizing()
        for shard in shards {
            try sizing.add(header: try await shard.header(), shard: shard.name)
        }
        let rows: [(String, UInt64)] = [
            ("as stored", sizing.totalBytes), ("bf16", sizing.bytes(atBits: 16)), ("int8", sizing.bytes(atBits: 8)),
            ("int4", sizing.bytes(atBits: 4)),
        ]
        if json {
            let object: [String: Any] = [
                "model": model, "shards": sizing.shards, "tensors": sizing.tensors, "parameters": sizing.totalParameters,
                "dtypes": sizing.parameters.mapValues { NSNumber(value: $0) }, "bytes": sizing.totalBytes,
                "gpuMemoryBytes": memory, "headroom": headroom,
                "precisions": Dictionary(uniqueKeysWithValues: rows.map { row in
                    (row.0, ["bytes": row.1, "gpus": ModelSizing.gpus(for: row.1, memory: memory, headroom: headroom)] as [String: Any])
                }),
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("\(model): \(sizing.shards) shard(s), \(sizing.tensors) tensors, \(Self.count(sizing.totalParameters)) parameters")
        let mix = sizing.parameters.sorted { $0.value > $1.value }.map { dtype, count in
            String(format: "%@ %.1f%%", dtype, 100 * Double(count) / Double(max(1, sizing.totalParameters)))
        }
        print("dtypes: " + mix.joined(separator: ", "))
        let usable = String(format: "%.0f%%", (1 - headroom) * 100)
        print("")
        print("precision".padding(toLength: 12, withPad: " ", startingAt: 0) + "weights".leftPadded(12)
            + "  GPUs of \(gpuMemory) (\(usable) for weights)")
        for (name, bytes) in rows {
            print(name.padding(toLength: 12, withPad: " ", startingAt: 0) + formatBytes(bytes).leftPadded(12)
                + "  \(ModelSizing.gpus(for: bytes, memory: memory, headroom: headroom))")
        }
    }

    /// One shard: its name and how to get its header JSON.
    struct Shard {
        var name: String
        var header: () async throws -> [UInt8]
    }

    /// The safetensors shards of a model reference or a store prefix.
    static func shards(of text: String, wiring: Wiring) async throws -> [Shard] {
        if text.hasPrefix("s3://") || text.hasPrefix("file://") {
            let location = try Location(parsing: text.hasSuffix("/") ? text : text + "/")
            let store = try wiring.store(for: location)
            let prefix = location.key.isEmpty || location.key.hasSuffix("/") ? location.key : location.key + "/"
            return try await store.list(prefix: prefix).filter { $0.key.hasSuffix(".safetensors") }.map { object in
                Shard(name: String(object.key.dropFirst(prefix.count))) { try await rawHeader(store, object.key, size: object.size) }
            }
        }
        let reference = try ModelReference(parsing: text)
        let repository = try wiring.repository()
        let resolved = try await repository.resolve(reference)
        return resolved.manifest.files.filter { $0.path.hasSuffix(".safetensors") }.map { file in
            let key = repository.key(of: file, in: reference)
            let store = repository.store
            if file.encoding == .lz4 {
                return Shard(name: file.path) { try await lz4Header(store, key, file: file, blockSize: resolved.manifest.blockSize) }
            }
            return Shard(name: file.path) { try await rawHeader(store, key, size: file.size) }
        }
    }

    /// Two ranged GETs: the 8-byte length, then the header.
    static func rawHeader(_ store: any ObjectStore, _ key: String, size: UInt64) async throws -> [UInt8] {
        let first = try await store.get(key, range: 0..<min(8, size))
        let length = try headerLength(first, size: size, key: key)
        return try await store.get(key, range: 8..<8 + length)
    }

    /// An lz4-stored shard: its first frames, decoded, until the header is in.
    static func lz4Header(_ store: any ObjectStore, _ key: String, file: Manifest.File, blockSize: Int) async throws -> [UInt8] {
        let frames = file.frames ?? []
        var decoded: [UInt8] = []
        var offset: UInt64 = 0
        for (index, frameSize) in frames.enumerated() {
            let compressed = try await store.get(key, range: offset..<offset + frameSize)
            offset += frameSize
            let length = Int(min(UInt64(blockSize), file.size - UInt64(index) * UInt64(blockSize)))
            var block = [UInt8](repeating: 0, count: length)
            try compressed.withUnsafeBytes { input in
                try block.withUnsafeMutableBytes { output in try LZ4Frame.decompress(input, into: output) }
            }
            decoded += block
            if decoded.count >= 8, let length = try? headerLength(Array(decoded.prefix(8)), size: file.size, key: key),
                UInt64(decoded.count) >= 8 + length
            {
                return Array(decoded[8..<Int(8 + length)])
            }
        }
        throw CommandError("\(key): the safetensors header runs past the end of the file")
    }

    /// The header length of a safetensors file (`SafetensorsIndex`'s reading
    /// of the first 8 bytes), which must fit in the file.
    static func headerLength(_ first: [UInt8], size: UInt64, key: String) throws -> UInt64 {
        let length: UInt64
        do { length = UInt64(try SafetensorsIndex.headerLength(first)) } catch {
            throw CommandError("\(key): not a safetensors file (\(error))")
        }
        guard 8 + length <= size else { throw CommandError("\(key): not a safetensors file (header runs past the end)") }
        return length
    }

    /// 8.03B, 22.7M, 1,024.
    static func count(_ n: UInt64) -> String {
        switch n {
        case 1_000_000_000...: String(format: "%.2fB", Double(n) / 1e9)
        case 1_000_000...: String(format: "%.1fM", Double(n) / 1e6)
        default: "\(n)"
        }
    }
}
