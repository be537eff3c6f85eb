import BlockCache
import Compression
import Foundation
import Models
import ObjectStore
import Staging
import Wire

#if canImport(Glibc)
import Glibc
#endif

// The read path. Every byte a client gets went through the block cache, which
// checks each block against its xxh3-64 before anyone can read it, whatever
// loaded it: pread of a staged blob, or — while the file is not staged yet —
// a ranged GET of just that block from the store (read-through). A cold read
// therefore waits for its own blocks, not for the file, and it starts the
// pull of the model in the background so later reads come from NVMe.

extension Node {
    /// Copies `range` of a file into `buffer` (which holds `range.count` bytes).
    /// `reader` identifies a client stream for sequential read-ahead.
    func read(
        model text: String, path: String, range: Range<UInt64>, into buffer: UnsafeMutableRawBufferPointer, reader: Int
    ) throws(DaemonError) {
        let model = try resolve(try Node.reference(text))
        let file = try file(path, of: model)
        let source = try source(of: file, in: model)
        do { try cache.read(source, range: range, into: buffer, reader: reader) } catch { throw DaemonError(error) }
    }

    /// Where the bytes of `path` end: for clipping a read's range.
    func size(model text: String, path: String) throws(DaemonError) -> UInt64 {
        try file(path, of: try resolve(try Node.reference(text))).size
    }

    /// A read-only descriptor of the staged, verified blob of a file (pulling
    /// it first if needed), and its info. The caller sends and closes it.
    func open(model text: String, path: String) throws(DaemonError) -> (descriptor: Int32, info: FileInfo) {
        let reference = try Node.reference(text)
        var model = try resolve(reference)
        var file = try file(path, of: model)
        if file.digest.map({ staging.state(ofBlob: $0) }) != .staged {
            _ = try waitForPull(of: model)
            model = try resolve(reference, fresh: true)
            file = try self.file(path, of: model)
        }
        guard let digest = file.digest else { throw .internal("\(reference) \(path): no digest after its pull") }
        let blob = staging.layout.blob(digest)
        let fd = Glibc.open(blob, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw errno == ENOENT ? .notFound("\(reference) \(path) was evicted from staging just now; retry") : .internal("open(\(blob)): errno \(errno)")
        }
        return (fd, info(file))
    }

    /// What the cache reads a file from: the staged blob if there is one, else
    /// the store block by block (which needs the manifest's block digests;
    /// a model without a manifest is pulled, and verified, first).
    func source(of file: ResolvedFile, in model: ResolvedModel) throws(DaemonError) -> BlobSource {
        if let digest = file.digest, staging.state(ofBlob: digest) == .staged,
            let staged = try? staging.stagedBlob(digest)
        {
            return BlobSource(
                digest: digest, path: staged.path, size: staged.size, blockSize: staged.digests.blockSize,
                blockDigests: staged.digests.digests)
        }
        if let digest = file.digest, let blocks = file.blockDigests, let entry = file.entry {
            startPull(of: model)
            return BlobSource(
                digest: digest, origin: .remote(remoteFetch(entry, of: model)), size: file.size,
                blockSize: model.blockSize, blockDigests: blocks)
        }
        // No digests to check a remote block against: only a verified pull will do.
        _ = try waitForPull(of: model)
        let again = try self.file(file.path, of: try resolve(model.reference, fresh: true))
        guard let digest = again.digest, let staged = try? staging.stagedBlob(digest) else {
            throw .notFound("\(model.reference) \(file.path) is not staged after its pull")
        }
        return BlobSource(
            digest: digest, path: staged.path, size: staged.size, blockSize: staged.digests.blockSize,
            blockDigests: staged.digests.digests)
    }

    /// Fetches one block of an unstaged file from the store: a ranged GET of
    /// the block (raw), or of its frame, decoded (lz4). The cache checks it.
    func remoteFetch(_ entry: Manifest.File, of model: ResolvedModel) -> BlobSource.Fetch {
        let store = repository.store
        let key = repository.key(of: entry, in: model.reference)
        let blockSize = UInt64(model.blockSize)
        let size = entry.size
        // offsets[i]: where frame i starts in the stored object.
        var offsets: [UInt64] = [0]
        for frame in entry.frames ?? [] { offsets.append(offsets.last! + frame) }
        let frameOffsets = offsets
        let digest = entry.xxh3_128 ?? entry.path
        return { (block: Int, target: UnsafeMutableRawBufferPointer) throws(CacheError) -> Void in
            let compressed = entry.encoding == .lz4
            let range: Range<UInt64> =
                compressed
                ? frameOffsets[block]..<frameOffsets[block + 1]
                : UInt64(block) * blockSize..<min(size, UInt64(block + 1) * blockSize)
            let bytes: [UInt8]
            do {
                bytes = try blocking { try await store.get(key, range: range) }
            } catch {
                throw .origin(blob: digest, block: block, reason: "\(error)")
            }
            guard bytes.count == Int(range.count) else {
                throw .origin(blob: digest, block: block, reason: "short read: \(bytes.count) of \(range.count) bytes")
            }
            if compressed {
                do {
                    try bytes.withUnsafeBytes { input in try LZ4Frame.decompress(input, into: target) }
                } catch {
                    throw .integrity(blob: digest, block: block, expected: "an lz4 frame", actual: "undecodable (\(error))")
                }
            } else {
                bytes.withUnsafeBytes { target.copyMemory(from: $0) }
            }
        }
    }
}
