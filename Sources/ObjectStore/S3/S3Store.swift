import Foundation

/// One bucket of an `S3Client`, as an `ObjectStore`.
public struct S3Store: ObjectStore {
    public let client: S3Client
    public let bucket: String
    /// Keys per ListObjectsV2 page (S3's maximum is 1,000).
    public var listPageSize = 1000

    public var name: String { "s3://\(bucket)" }

    func context(_ operation: String, _ key: String? = nil, _ range: Range<UInt64>? = nil) -> ErrorContext {
        ErrorContext(operation: operation, store: name, key: key, range: range)
    }

    func checked(_ key: String) throws(ObjectStoreError) -> String {
        guard !key.isEmpty else { throw .invalidKey(key, reason: "empty") }
        guard !key.utf8.contains(0) else { throw .invalidKey(key, reason: "contains NUL") }
        guard key.utf8.count <= 1024 else { throw .invalidKey(key, reason: "longer than 1024 bytes") }
        return key
    }

    public func head(_ key: String) async throws(ObjectStoreError) -> ObjectInfo {
        let outcome = try await client.send(
            client.request(.head, bucket: bucket, key: checked(key)), context("HeadObject", key))
        guard let size = outcome.headers["content-length"].flatMap({ UInt64($0) }) else {
            throw .invalidResponse(context("HeadObject", key), reason: "no Content-Length")
        }
        return ObjectInfo(key: key, size: size, etag: outcome.headers["etag"])
    }

    public func get(_ key: String, range: Range<UInt64>?) async throws(ObjectStoreError) -> [UInt8] {
        if let range, range.isEmpty { return [] }
        var request = client.request(.get, bucket: bucket, key: try checked(key), range: range)
        request.sink = .memory(limit: range.map { Int(clamping: $0.count) } ?? Int.max)
        let outcome = try await client.send(request, context("GetObject", key, range))
        // A server that ignores Range answers 200 with the whole object.
        if let range, outcome.status == 200 {
            let end = min(UInt64(outcome.body.count), range.upperBound)
            guard range.lowerBound < end else { throw .invalidRange(context("GetObject", key, range)) }
            return Array(outcome.body[Int(range.lowerBound)..<Int(end)])
        }
        return outcome.body
    }

    public func read(_ key: String, range: Range<UInt64>, into targets: [MemoryTarget]) async throws(ObjectStoreError) {
        precondition(targets.reduce(0) { $0 + $1.buffer.count } == range.count, "targets must add up to the range")
        if range.isEmpty { return }
        var request = client.request(.get, bucket: bucket, key: try checked(key), range: range)
        request.sink = .buffers(targets)
        // A server that ignores Range answers 200 with the whole object: the
        // transfer refuses it at its first byte (`rangeIgnored`) for a range
        // past 0; from 0, the targets hold exactly the bytes asked for.
        _ = try await client.send(request, context("GetObject", key, range))
    }

    public func download(
        _ key: String, range: Range<UInt64>, into file: OutputFile, at offset: UInt64,
        ifMatch etag: String?, progress: ProgressHandler?
    ) async throws(ObjectStoreError) {
        if range.isEmpty { return }
        var request = client.request(
            .get, bucket: bucket, key: try checked(key), range: range, headers: etag.map { ["If-Match: \($0)"] } ?? [])
        request.sink = .file(file, offset: offset, length: UInt64(range.count), progress: progress)
        _ = try await client.send(request, context("GetObject", key, range), progress: progress)
    }

    public func list(prefix: String) async throws(ObjectStoreError) -> [ObjectInfo] {
        var objects: [ObjectInfo] = []
        var token: String? = nil
        repeat {
            var query = [("list-type", "2"), ("prefix", prefix), ("max-keys", String(listPageSize))]
            if let token { query.append(("continuation-token", token)) }
            let outcome = try await client.send(
                client.request(.get, bucket: bucket, query: query), context("ListObjectsV2", prefix))
            guard let page = S3XML.listPage(outcome.body) else {
                throw .invalidResponse(context("ListObjectsV2", prefix), reason: "not a ListBucketResult")
            }
            objects += page.objects
            token = page.nextContinuationToken
        } while token != nil
        return objects.sorted { $0.key < $1.key }
    }

    public func put(_ key: String, bytes: [UInt8]) async throws(ObjectStoreError) {
        _ = try await client.send(
            client.request(.put, bucket: bucket, key: checked(key), body: bytes), context("PutObject", key))
    }

    public func delete(_ key: String) async throws(ObjectStoreError) {
        _ = try await client.send(
            client.request(.delete, bucket: bucket, key: checked(key)), context("DeleteObject", key))
    }
}
