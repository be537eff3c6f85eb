// FileStore: a directory as an object store (`file:///path`).
//
// Keys are relative paths under the root. A key that would leave the root
// (`..`, an absolute path, NUL) is refused before any syscall. Writes go to a
// hidden temporary file and are renamed into place, so a reader never sees a
// half-written object. I/O runs on Dispatch workers (see `onWorkerThread`).
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public struct FileStore: ObjectStore {
    public let root: String

    /// `root` must be an existing directory when the store is used.
    public init(root: String) {
        self.root = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
    }

    public var name: String { "file://\(root)" }

    func path(_ key: String) throws(ObjectStoreError) -> String {
        guard !key.isEmpty else { throw .invalidKey(key, reason: "empty") }
        guard !key.utf8.contains(0) else { throw .invalidKey(key, reason: "contains NUL") }
        guard !key.hasPrefix("/") else { throw .invalidKey(key, reason: "absolute path") }
        let parts = key.split(separator: "/", omittingEmptySubsequences: false)
        guard !parts.contains(where: { $0 == ".." || $0 == "." || $0.isEmpty }) else {
            throw .invalidKey(key, reason: "'.', '..' or empty path component")
        }
        return root + "/" + key
    }

    func context(_ operation: String, _ key: String?, _ range: Range<UInt64>? = nil) -> ErrorContext {
        ErrorContext(operation: operation, store: name, key: key, range: range)
    }

    func openObject(_ key: String, _ operation: String) throws(ObjectStoreError) -> LocalFile {
        let file = try path(key)
        let opened: LocalFile
        do throws(ObjectStoreError) {
            opened = try LocalFile(openForReading: file)
        } catch {
            guard case .localIO(_, _, let e) = error, e == ENOENT || e == ENOTDIR else { throw error }
            var info = stat()
            throw stat(root, &info) == 0 ? .notFound(context(operation, key)) : .bucketNotFound(context(operation, key))
        }
        var info = stat()
        if fstat(opened.descriptor, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR {
            opened.close()
            throw .notFound(context(operation, key))
        }
        return opened
    }

    public func head(_ key: String) async throws(ObjectStoreError) -> ObjectInfo {
        try await onWorkerThread { () throws(ObjectStoreError) in
            let file = try openObject(key, "head")
            defer { file.close() }
            return ObjectInfo(key: key, size: try file.size())
        }
    }

    public func get(_ key: String, range: Range<UInt64>?) async throws(ObjectStoreError) -> [UInt8] {
        if let range, range.isEmpty { return [] }
        return try await onWorkerThread { () throws(ObjectStoreError) in
            let file = try openObject(key, "read")
            defer { file.close() }
            let size = try file.size()
            let wanted = range ?? 0..<size
            guard wanted.lowerBound < size || (range == nil && size == 0) else {
                throw .invalidRange(context("read", key, range))
            }
            return try file.read(wanted.lowerBound..<min(wanted.upperBound, size))
        }
    }

    /// pread straight into the caller's memory: no array per read, no copy
    /// (the protocol's default goes through `get`).
    public func read(_ key: String, range: Range<UInt64>, into targets: [MemoryTarget]) async throws(ObjectStoreError) {
        precondition(targets.reduce(0) { $0 + $1.buffer.count } == range.count, "targets must add up to the range")
        if range.isEmpty { return }
        try await onWorkerThread { () throws(ObjectStoreError) in
            let file = try openObject(key, "read")
            defer { file.close() }
            let size = try file.size()
            guard range.lowerBound < size else { throw .invalidRange(context("read", key, range)) }
            guard range.upperBound <= size else {
                throw .invalidResponse(context("read", key, range), reason: "short read: \(size - range.lowerBound) of \(range.count) bytes")
            }
            var position = range.lowerBound
            for target in targets {
                try file.read(at: position, into: target.buffer)
                position += UInt64(target.buffer.count)
            }
        }
    }

    public func download(
        _ key: String, range: Range<UInt64>, into output: OutputFile, at offset: UInt64,
        ifMatch etag: String?, progress: ProgressHandler?
    ) async throws(ObjectStoreError) {
        if range.isEmpty { return }
        try await onWorkerThread { () throws(ObjectStoreError) in
            let file = try openObject(key, "read")
            defer { file.close() }
            guard range.upperBound <= (try file.size()) else { throw .invalidRange(context("read", key, range)) }
            let chunk: UInt64 = 4 << 20
            var position = range.lowerBound
            while position < range.upperBound {
                let piece = try file.read(position..<min(range.upperBound, position + chunk))
                try Self.write(piece, to: output, at: offset + (position - range.lowerBound))
                position += UInt64(piece.count)
                progress?(Int64(piece.count))
            }
        }
    }

    public func list(prefix: String) async throws(ObjectStoreError) -> [ObjectInfo] {
        try await onWorkerThread { () throws(ObjectStoreError) in
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw .bucketNotFound(context("list", prefix))
            }
            guard let walker = FileManager.default.enumerator(atPath: root) else {
                throw .localIO(syscall: "opendir", path: root, errno: errno)
            }
            var objects: [ObjectInfo] = []
            while let relative = walker.nextObject() as? String {
                // Temporary files of writes in progress are not objects yet.
                guard relative.hasPrefix(prefix), !(relative as NSString).lastPathComponent.hasPrefix(".wc-tmp-")
                else { continue }
                guard let attributes = walker.fileAttributes, attributes[.type] as? FileAttributeType == .typeRegular
                else { continue }
                let size = (attributes[.size] as? NSNumber)?.uint64Value ?? 0
                objects.append(ObjectInfo(key: relative, size: size))
            }
            return objects.sorted { $0.key < $1.key }
        }
    }

    public func put(_ key: String, bytes: [UInt8]) async throws(ObjectStoreError) {
        try await onWorkerThread { () throws(ObjectStoreError) in
            try writeAtomically(key) { output throws(ObjectStoreError) in try Self.write(bytes, to: output, at: 0) }
        }
    }

    public func upload(_ key: String, fromFile source: String, progress: ProgressHandler?) async throws(ObjectStoreError) {
        try await onWorkerThread { () throws(ObjectStoreError) in
            let input = try LocalFile(openForReading: source)
            defer { input.close() }
            let size = try input.size()
            try writeAtomically(key) { output throws(ObjectStoreError) in
                var position: UInt64 = 0
                while position < size {
                    let piece = try input.read(position..<min(size, position + (4 << 20)))
                    try Self.write(piece, to: output, at: position)
                    position += UInt64(piece.count)
                    progress?(Int64(piece.count))
                }
            }
        }
    }

    public func delete(_ key: String) async throws(ObjectStoreError) {
        let file = try path(key)
        try await onWorkerThread { () throws(ObjectStoreError) in
            if unlink(file) != 0 && errno != ENOENT { throw .localIO(syscall: "unlink", path: file, errno: errno) }
        }
    }

    private func writeAtomically(_ key: String, _ fill: (OutputFile) throws(ObjectStoreError) -> Void) throws(ObjectStoreError) {
        let final = try path(key)
        let directory = (final as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .localIO(syscall: "mkdir", path: directory, errno: (error as NSError).code == 0 ? EIO : Int32((error as NSError).code))
        }
        let temporary = directory + "/.wc-tmp-\(UUID().uuidString)"
        let file = try LocalFile(creatingForWriting: temporary, size: 0)
        var failure: ObjectStoreError? = nil
        do throws(ObjectStoreError) {
            try fill(file.output)
            try file.sync()
        } catch { failure = error }
        file.close()
        if failure == nil && rename(temporary, final) != 0 {
            failure = .localIO(syscall: "rename", path: final, errno: errno)
        }
        if let failure {
            unlink(temporary)
            throw failure
        }
    }

    static func write(_ bytes: [UInt8], to output: OutputFile, at offset: UInt64) throws(ObjectStoreError) {
        var done = 0
        var failure: Int32 = 0
        bytes.withUnsafeBytes { buffer in
            while done < buffer.count {
                let n = pwrite(output.descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
                if n < 0 && errno == EINTR { continue }
                if n < 0 { failure = errno; return }
                done += n
            }
            output.observer?.wrote(buffer, at: offset)
        }
        if failure != 0 { throw .localIO(syscall: "pwrite", path: output.path, errno: failure) }
    }
}
