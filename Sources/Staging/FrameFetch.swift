import Compression
import Foundation
import Integrity
import Models
import ObjectStore

extension BlobPuller {
    /// Fetches the parts `parts` of an lz4 file (one frame per block, see
    /// `LZ4Frame`): each part's frames come in one ranged GET, are decoded in
    /// memory (so memory is concurrency x part size), written to the partial
    /// at their decoded offsets and handed to `accept` straight from memory.
    /// Returns the stored (compressed) bytes fetched.
    func fetchFrames(
        _ file: Manifest.File, _ object: ObjectInfo, parts: [Int], blockSize: Int, model: String,
        from store: any ObjectStore, into partial: PartialFile, pool: BufferPool, progress: ProgressHandler?,
        accept: @escaping @Sendable (Int, Range<UInt64>, UnsafeRawBufferPointer) throws(StagingError) -> Void
    ) async throws -> UInt64 {
        let frames = file.frames ?? []
        // offsets[i]: where frame i starts in the object; offsets[frames.count]: its end.
        var offsets: [UInt64] = [0]
        for size in frames { offsets.append(offsets.last! + size) }
        let starts = offsets
        let downloader = self.downloader
        @Sendable func blocks(_ part: Int) -> Range<Int> {
            let range = downloader.range(ofPart: part, size: file.size)
            return Int(range.lowerBound / UInt64(blockSize))..<Int((range.upperBound + UInt64(blockSize) - 1) / UInt64(blockSize))
        }
        let stored = parts.reduce(UInt64(0)) { $0 + starts[blocks($1).upperBound] - starts[blocks($1).lowerBound] }
        try await downloader.run(parts: parts, cost: { Int(starts[blocks($0).upperBound] - starts[blocks($0).lowerBound]) }) {
            part in
            let range = downloader.range(ofPart: part, size: file.size)
            let span = blocks(part)
            let compressed = try await store.get(object.key, range: starts[span.lowerBound]..<starts[span.upperBound])
            guard compressed.count == Int(starts[span.upperBound] - starts[span.lowerBound]) else {
                throw StagingError.store(model: model, file: file.path, .invalidResponse(
                    ErrorContext(operation: "GetObject", store: store.name, key: object.key), reason: "short lz4 part"))
            }
            let decoded = PartBuffer(count: Int(range.count), from: pool)
            let failure: StagingError? = decoded.withMutableBytes { output in
                compressed.withUnsafeBytes { input -> StagingError? in
                    for block in span {
                        let from = Int(starts[block] - starts[span.lowerBound])
                        let to = Int(starts[block + 1] - starts[span.lowerBound])
                        let start = block * blockSize - Int(range.lowerBound)
                        let target = UnsafeMutableRawBufferPointer(rebasing: output[start..<min(output.count, start + blockSize)])
                        do { try LZ4Frame.decompress(UnsafeRawBufferPointer(rebasing: input[from..<to]), into: target) } catch {
                            return .integrity(
                                model: model, file: file.path, block: block, expected: file.blocks?[block] ?? "?",
                                actual: "undecodable (\(error))")
                        }
                    }
                    return nil
                }
            }
            if let failure { throw failure }
            try decoded.withBytes { (bytes) throws(StagingError) in
                try partial.write(bytes, at: range.lowerBound)
                progress?(Int64(bytes.count))
                try accept(part, range, bytes)
            }
        }
        return stored
    }
}
