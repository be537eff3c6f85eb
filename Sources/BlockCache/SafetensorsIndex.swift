import Foundation

/// Where each tensor of a safetensors file lies, from its header: 8 bytes of
/// little-endian header length, then that many bytes of JSON mapping tensor
/// names to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets
/// relative to the end of the header). Loaders read tensors in the order they
/// need them, which is mostly but not always file order: when a reader touches
/// a tensor, the tensors that follow it in offset order are the ones to fetch
/// next, whatever their names.
public struct SafetensorsIndex: Sendable, Equatable {
    public struct Tensor: Sendable, Equatable {
        public var name: String
        /// Byte range in the file (header included in the offsets).
        public var range: Range<UInt64>
    }

    /// Tensors sorted by offset.
    public let tensors: [Tensor]
    /// Bytes before the first tensor: 8 + header length.
    public let dataStart: UInt64

    public struct Invalid: Error, Equatable, CustomStringConvertible {
        public var description: String
    }

    /// The header length a file starts with: read the first 8 bytes, then
    /// that many more, and pass them all to `init(header:)`.
    public static func headerLength(_ first8: [UInt8]) throws(Invalid) -> Int {
        guard first8.count >= 8 else { throw Invalid(description: "shorter than 8 bytes") }
        let length = first8.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard length > 1, length < 100 << 20 else { throw Invalid(description: "header length \(length) out of range") }
        return Int(length)
    }

    /// Parses the first 8 + N bytes of a file; `fileSize` bounds the offsets.
    public init(header bytes: [UInt8], fileSize: UInt64) throws(Invalid) {
        let length = try Self.headerLength(bytes)
        guard bytes.count >= 8 + length else { throw Invalid(description: "header truncated") }
        let json: Any
        do { json = try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + length)])) } catch {
            throw Invalid(description: "header is not JSON")
        }
        guard let entries = json as? [String: Any] else { throw Invalid(description: "header is not a JSON object") }
        let start = UInt64(8 + length)
        var tensors: [Tensor] = []
        for (name, value) in entries where name != "__metadata__" {
            guard let info = value as? [String: Any], let offsets = info["data_offsets"] as? [NSNumber], offsets.count == 2
            else { throw Invalid(description: "tensor \(name) has no data_offsets") }
            let begin = start + offsets[0].uint64Value
            let end = start + offsets[1].uint64Value
            guard begin <= end, end <= fileSize else { throw Invalid(description: "tensor \(name) lies outside the file") }
            tensors.append(Tensor(name: name, range: begin..<end))
        }
        self.tensors = tensors.sorted { ($0.range.lowerBound, $0.name) < ($1.range.lowerBound, $1.name) }
        self.dataStart = start
    }

    /// The tensor holding byte `offset`, if any.
    public func tensor(at offset: UInt64) -> Int? {
        var low = 0
        var high = tensors.count
        while low < high {
            let middle = (low + high) / 2
            if tensors[middle].range.upperBound <= offset { low = middle + 1 } else { high = middle }
        }
        return low < tensors.count && tensors[low].range.contains(offset) ? low : nil
    }

    /// The byte ranges of the `count` tensors after the one holding `offset`, in file order.
    public func following(_ offset: UInt64, count: Int) -> [Range<UInt64>] {
        guard let index = tensor(at: offset) else { return [] }
        return tensors[(index + 1)..<min(tensors.count, index + 1 + count)].map(\.range)
    }
}
