import Foundation

/// The sizing question every deployment starts with, answered from
/// safetensors headers alone: how many parameters, of which dtypes, how many
/// bytes of weights, what they would weigh at bf16, int8 and int4, and how
/// many GPUs of a given memory they need once some of it is left for the KV
/// cache. Pure: the caller fetches the headers (a few KiB per shard).
public struct ModelSizing: Sendable, Equatable {
    /// Parameters per safetensors dtype name ("BF16", "F32", ...).
    public private(set) var parameters: [String: UInt64] = [:]
    /// Bytes per dtype, as stored.
    public private(set) var bytes: [String: UInt64] = [:]
    public private(set) var tensors = 0
    public private(set) var shards = 0

    public init() {}

    public struct Invalid: Error, Equatable, CustomStringConvertible {
        public var description: String
    }

    /// Bytes per element of each safetensors dtype (sub-byte ones as fractions of 8 bits).
    static let bits: [String: UInt64] = [
        "F64": 64, "I64": 64, "U64": 64, "F32": 32, "I32": 32, "U32": 32, "F16": 16, "BF16": 16, "I16": 16, "U16": 16,
        "I8": 8, "U8": 8, "BOOL": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "F6_E2M3": 6, "F6_E3M2": 6, "F4": 4,
    ]

    /// Adds one shard, given the JSON of its header (the bytes after the
    /// 8-byte length). Every tensor must have a known dtype and a shape
    /// whose byte count matches its data_offsets.
    public mutating func add(header json: [UInt8], shard: String) throws(Invalid) {
        let parsed: Any
        do { parsed = try JSONSerialization.jsonObject(with: Data(json)) } catch {
            throw Invalid(description: "\(shard): the safetensors header is not JSON")
        }
        guard let entries = parsed as? [String: Any] else { throw Invalid(description: "\(shard): the header is not a JSON object") }
        for (name, value) in entries where name != "__metadata__" {
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String, let shape = info["shape"] as? [NSNumber],
                let offsets = info["data_offsets"] as? [NSNumber], offsets.count == 2
            else { throw Invalid(description: "\(shard): tensor \(name) lacks dtype, shape or data_offsets") }
            guard let bits = Self.bits[dtype] else { throw Invalid(description: "\(shard): tensor \(name) has unknown dtype \(dtype)") }
            let count = shape.reduce(UInt64(1)) { $0 * $1.uint64Value }
            let stored = offsets[1].uint64Value &- offsets[0].uint64Value
            guard offsets[1].uint64Value >= offsets[0].uint64Value, stored == (count * bits + 7) / 8 else {
                throw Invalid(description: "\(shard): tensor \(name) is \(stored) bytes, its shape and dtype say \((count * bits + 7) / 8)")
            }
            parameters[dtype, default: 0] += count
            bytes[dtype, default: 0] += stored
            tensors += 1
        }
        shards += 1
    }

    public var totalParameters: UInt64 { parameters.values.reduce(0, +) }
    public var totalBytes: UInt64 { bytes.values.reduce(0, +) }

    /// Weight bytes at `bitsPerParameter` for every parameter.
    public func bytes(atBits bitsPerParameter: UInt64) -> UInt64 { (totalParameters * bitsPerParameter + 7) / 8 }

    /// GPUs of `memory` bytes needed for `weights` bytes when `headroom` (0..<1)
    /// of each GPU is kept for the KV cache and activations.
    public static func gpus(for weights: UInt64, memory: UInt64, headroom: Double) -> Int {
        let usable = Double(memory) * (1 - headroom)
        guard usable > 0 else { return 0 }
        return max(1, Int((Double(weights) / usable).rounded(.up)))
    }
}
