import Foundation

// Multipart upload: create, upload parts in parallel, complete; abort on any
// failure so that no orphaned parts keep costing storage.
extension S3Store {
    public func upload(_ key: String, fromFile path: String, progress: ProgressHandler?) async throws(ObjectStoreError) {
        let source = try LocalFile(openForReading: path)
        defer { source.close() }
        let size = try source.size()
        if size <= max(client.settings.partSize, 5 << 20) {
            try await put(key, bytes: source.read(0..<size))
            progress?(Int64(size))
            return
        }
        try await upload(key, size: size, progress: progress) { range throws(ObjectStoreError) in
            try source.read(range)
        }
    }

    /// Uploads `size` bytes as `key` in parts, each read by `readPart` when its
    /// turn comes (so memory stays at concurrency x part size). On any failure
    /// the upload is aborted, then the error is thrown.
    public func upload(
        _ key: String, size: UInt64, progress: ProgressHandler?,
        readPart: @escaping @Sendable (Range<UInt64>) throws(ObjectStoreError) -> [UInt8]
    ) async throws(ObjectStoreError) {
        let partSize = Self.multipartPartSize(size: size, preferred: client.settings.partSize)
        let count = Int((size + partSize - 1) / partSize)
        let created = try await client.send(
            client.request(.post, bucket: bucket, key: checked(key), query: [("uploads", "")]),
            context("CreateMultipartUpload", key))
        guard let uploadID = S3XML.uploadID(created.body) else {
            throw .invalidResponse(context("CreateMultipartUpload", key), reason: "no UploadId")
        }
        do throws(ObjectStoreError) {
            let etags = try await concurrentStoreMap(count: count, concurrency: client.settings.concurrency) {
                index throws(ObjectStoreError) in
                let range = UInt64(index) * partSize..<min(size, UInt64(index + 1) * partSize)
                let outcome = try await client.send(
                    client.request(
                        .put, bucket: bucket, key: key,
                        query: [("partNumber", String(index + 1)), ("uploadId", uploadID)],
                        body: try readPart(range)),
                    context("UploadPart", key, range))
                guard let etag = outcome.headers["etag"] else {
                    throw .invalidResponse(context("UploadPart", key, range), reason: "no ETag")
                }
                progress?(Int64(range.count))
                return etag
            }
            let completed = try await client.send(
                client.request(
                    .post, bucket: bucket, key: key, query: [("uploadId", uploadID)],
                    body: S3XML.completeMultipartBody(etags: etags)),
                context("CompleteMultipartUpload", key))
            // S3 may answer 200 and still put an error in the body.
            if let error = S3XML.error(completed.body) {
                var c = context("CompleteMultipartUpload", key)
                (c.status, c.code, c.message, c.requestID) = (200, error.code, error.message, error.requestID)
                throw S3Client.classify(status: 500, code: error.code, c)
            }
        } catch {
            try? await abortUpload(key, uploadID: uploadID)
            throw error
        }
    }

    public func abortUpload(_ key: String, uploadID: String) async throws(ObjectStoreError) {
        _ = try await client.send(
            client.request(.delete, bucket: bucket, key: checked(key), query: [("uploadId", uploadID)]),
            context("AbortMultipartUpload", key))
    }

    /// Multipart uploads in progress under `prefix` (first page, up to 1,000).
    public func pendingUploads(prefix: String) async throws(ObjectStoreError) -> [(key: String, uploadID: String)] {
        let outcome = try await client.send(
            client.request(.get, bucket: bucket, query: [("uploads", ""), ("prefix", prefix)]),
            context("ListMultipartUploads", prefix))
        guard let uploads = S3XML.uploads(outcome.body) else {
            throw .invalidResponse(context("ListMultipartUploads", prefix), reason: "not a ListMultipartUploadsResult")
        }
        return uploads
    }

    /// At least 5 MiB (S3's minimum part), at most 10,000 parts.
    static func multipartPartSize(size: UInt64, preferred: UInt64) -> UInt64 {
        let floor: UInt64 = 5 << 20
        let forCount = (size + 9_999) / 10_000
        return max(preferred, floor, forCount)
    }
}
