// Compression: lz4 frames (liblz4's frame API) for models pushed with
// `--compress lz4`.
//
// Each block of a file (the manifest's block size, 4 MiB by default) becomes
// one independent lz4 frame, and the object is those frames back to back: a
// valid lz4 stream (`lz4 -d` restores the file) whose frames can also be
// fetched and decoded one part at a time, in parallel, at any offset, given
// the frame sizes the manifest lists. So compressed models keep parallel
// ranged GETs, per-block verification and block-granular resume.
import CLZ4

/// A corrupt or truncated frame, or one that does not decode to the expected size.
public struct LZ4Error: Error, Equatable, CustomStringConvertible {
    public var description: String

    init(_ description: String) { self.description = description }
}

public enum LZ4Frame {
    /// One frame holding `block`, at lz4's fastest level, content size in the
    /// header and no lz4 checksum (blocks are checked by xxh3 instead).
    public static func compress(_ block: UnsafeRawBufferPointer) -> [UInt8] {
        var preferences = LZ4F_preferences_t()
        preferences.frameInfo.contentSize = UInt64(block.count)
        preferences.frameInfo.blockSizeID = LZ4F_max4MB
        let bound = LZ4F_compressFrameBound(block.count, &preferences)
        var output = [UInt8](repeating: 0, count: bound)
        let written = output.withUnsafeMutableBytes { out in
            LZ4F_compressFrame(out.baseAddress, bound, block.baseAddress, block.count, &preferences)
        }
        precondition(LZ4F_isError(written) == 0, "LZ4F_compressFrame: \(String(cString: LZ4F_getErrorName(written)))")
        output.removeSubrange(written...)
        return output
    }

    /// Decodes exactly one frame, `frame`, into exactly `output.count` bytes.
    public static func decompress(
        _ frame: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer
    ) throws(LZ4Error) {
        var context: OpaquePointer? = nil
        let created = LZ4F_createDecompressionContext(&context, UInt32(LZ4F_VERSION))
        guard LZ4F_isError(created) == 0, let context else { throw LZ4Error("cannot create an lz4 context") }
        defer { LZ4F_freeDecompressionContext(context) }
        var consumed = 0
        var produced = 0
        while true {
            var sourceSize = frame.count - consumed
            var destinationSize = output.count - produced
            let hint = LZ4F_decompress(
                context, output.baseAddress.map { $0 + produced }, &destinationSize,
                frame.baseAddress.map { $0 + consumed }, &sourceSize, nil)
            guard LZ4F_isError(hint) == 0 else {
                throw LZ4Error("corrupt lz4 frame: \(String(cString: LZ4F_getErrorName(hint)))")
            }
            consumed += sourceSize
            produced += destinationSize
            if hint == 0 { break }  // frame complete
            guard sourceSize > 0 || destinationSize > 0 else {
                throw LZ4Error("lz4 frame truncated or larger than \(output.count) bytes")
            }
        }
        guard consumed == frame.count, produced == output.count else {
            throw LZ4Error("lz4 frame decoded to \(produced) bytes from \(consumed) of \(frame.count); expected \(output.count)")
        }
    }
}
