import Compression
import Foundation
import Integrity
import ObjectStore

/// The published models under one root: a store and a key prefix inside it.
public struct ModelRepository: Sendable {
    public let store: any ObjectStore
    /// "" or a prefix ending in "/".
    public let prefix: String

    public init(store: any ObjectStore, prefix: String) {
        self.store = store
        self.prefix = prefix.isEmpty || prefix.hasSuffix("/") ? prefix : prefix + "/"
    }

    /// Where the model's folder is, for messages: `s3://models/llama/main/`.
    public func location(of reference: ModelReference) -> String {
        "\(store.name)/\(prefix)\(reference.folder)"
    }

    /// The object key of one file of a model.
    public func key(of file: Manifest.File, in reference: ModelReference) -> String {
        prefix + reference.folder + file.object
    }

    /// A model as it can be pulled: its manifest, validated, and whether it was
    /// published (true) or made from a listing of a folder without one (false:
    /// no digests are known before download).
    public struct Resolved: Sendable, Equatable {
        public var reference: ModelReference
        public var manifest: Manifest
        public var published: Bool
    }

    static let manifestAttempts = 3

    public func resolve(_ reference: ModelReference) async throws(ModelError) -> Resolved {
        let manifestKey = prefix + reference.folder + Manifest.objectName
        do {
            // A manifest that does not decode or check out may have been
            // corrupted on the way: fetched again a few times before refused.
            var attempt = 0
            while true {
                let bytes = try await store.get(manifestKey)
                do {
                    return Resolved(reference: reference, manifest: try Manifest.decode(bytes, for: reference), published: true)
                } catch {
                    attempt += 1
                    if attempt >= Self.manifestAttempts { throw error }
                }
            }
        } catch let error as ModelError {
            throw error
        } catch let error as ObjectStoreError {
            guard case .notFound = error else { throw .store(error) }
        } catch {
            throw .store(.cancelled)
        }
        // No manifest: every object of the folder is a file of the model.
        let folder = prefix + reference.folder
        let objects: [ObjectInfo]
        do { objects = try await store.list(prefix: folder) } catch { throw .store(error) }
        let files = objects.filter { !$0.key.hasSuffix("/") }.map { object in
            let relative = String(object.key.dropFirst(folder.count))
            return Manifest.File(path: relative, object: relative, size: object.size, xxh3_128: nil, blocks: nil)
        }
        guard !files.isEmpty else { throw .modelNotFound(model: reference.description, location: location(of: reference)) }
        let manifest = Manifest(model: reference, files: files)
        try manifest.validate(for: reference)
        return Resolved(reference: reference, manifest: manifest, published: false)
    }

    /// Publishes every regular file under `directory` (symlinks followed, so a
    /// Hugging Face snapshot folder works; `.git` skipped) as `reference`:
    /// files first, each uploaded in parallel parts, then the manifest, last.
    /// With `compress`, each file is stored as lz4 frames, one per block
    /// (`PATH.lz4`), through a temporary file in `scratch`.
    public func push(
        directory: String, as reference: ModelReference, blockSize: Int = Manifest.defaultBlockSize,
        compress: Bool = false, scratch: String = NSTemporaryDirectory(), progress: ProgressHandler? = nil
    ) async throws(ModelError) -> Manifest {
        let paths = try Self.regularFiles(under: directory)
        var files: [Manifest.File] = []
        for path in paths {
            let full = directory + "/" + path
            var file: Manifest.File
            var upload = full
            if compress {
                let packed = scratch + "/.weightcache-push-\(UUID().uuidString).lz4"
                file = try Self.pack(full, as: path, blockSize: blockSize, into: packed)
                upload = packed
            } else {
                let digests: FileDigests
                do { digests = try FileDigests(ofFile: full, blockSize: blockSize) } catch {
                    throw .localIO(syscall: error.syscall, path: error.path, errno: error.errno)
                }
                file = Manifest.File(
                    path: path, object: path, size: digests.size, xxh3_128: digests.whole.description,
                    blocks: digests.blocks.map(hex16))
            }
            defer { if upload != full { unlink(upload) } }
            do { try await store.upload(key(of: file, in: reference), fromFile: upload, progress: progress) } catch {
                throw .store(error)
            }
            files.append(file)
        }
        let manifest = Manifest(model: reference, blockSize: blockSize, files: files)
        try manifest.validate(for: reference)
        do { try await store.put(prefix + reference.folder + Manifest.objectName, bytes: manifest.encoded()) } catch {
            throw .store(error)
        }
        return manifest
    }

    /// One pass over `source`: digests, and each block as an lz4 frame appended to `destination`.
    static func pack(_ source: String, as path: String, blockSize: Int, into destination: String) throws(ModelError) -> Manifest.File {
        guard let output = FileHandle(forWritingAtPath: destination)
            ?? (FileManager.default.createFile(atPath: destination, contents: nil)
                ? FileHandle(forWritingAtPath: destination) : nil)
        else { throw .localIO(syscall: "create", path: destination, errno: errno) }
        defer { try? output.close() }
        var frames: [UInt64] = []
        let digests: FileDigests
        do throws(FileDigestError) {
            digests = try FileDigests(ofFile: source, blockSize: blockSize) { block throws(FileDigestError) in
                let frame = LZ4Frame.compress(block)
                frames.append(UInt64(frame.count))
                do { try output.write(contentsOf: frame) } catch {
                    throw FileDigestError(syscall: "write", path: destination, errno: EIO)
                }
            }
        } catch {
            unlink(destination)
            throw .localIO(syscall: error.syscall, path: error.path, errno: error.errno)
        }
        return Manifest.File(
            path: path, object: path + ".lz4", size: digests.size, xxh3_128: digests.whole.description,
            blocks: digests.blocks.map(hex16), encoding: .lz4, frames: frames)
    }

    static func regularFiles(under directory: String) throws(ModelError) -> [String] {
        guard let walker = FileManager.default.enumerator(atPath: directory) else {
            throw .localIO(syscall: "opendir", path: directory, errno: ENOENT)
        }
        var found: [String] = []
        while let relative = walker.nextObject() as? String {
            if relative == ".git" || relative.hasPrefix(".git/") {
                walker.skipDescendants()
                continue
            }
            var info = stat()
            guard stat(directory + "/" + relative, &info) == 0 else {
                throw .localIO(syscall: "stat", path: directory + "/" + relative, errno: errno)
            }
            if (info.st_mode & S_IFMT) == S_IFREG && relative != Manifest.objectName { found.append(relative) }
        }
        guard !found.isEmpty else { throw .localIO(syscall: "push: no files in", path: directory, errno: ENOENT) }
        return found.sorted()
    }
}
