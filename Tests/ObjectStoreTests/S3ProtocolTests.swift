import Logging
import XCTest

@testable import ObjectStore

/// The pure parts of the S3 client: URLs, XML, error mapping, retries.
final class S3ProtocolTests: XCTestCase {
    func settings(_ endpoint: String?, _ addressing: S3Addressing = .path, region: String = "us-east-1") -> S3Settings {
        S3Settings(endpoint: endpoint, region: region, addressing: addressing, credentials: nil)
    }

    func testURLsAreCanonical() throws {
        let path = try S3URLBuilder(settings: settings("http://127.0.0.1:8333"))
        XCTAssertEqual(path.url(bucket: "b", key: "a b/c+d%e/é"), "http://127.0.0.1:8333/b/a%20b/c%2Bd%25e/%C3%A9")
        XCTAssertEqual(
            path.url(bucket: "b", query: [("prefix", "x/y z"), ("list-type", "2"), ("continuation-token", "a=b&c")]),
            "http://127.0.0.1:8333/b/?continuation-token=a%3Db%26c&list-type=2&prefix=x%2Fy%20z")
        XCTAssertEqual(path.url(bucket: "b", key: "k", query: [("uploads", "")]), "http://127.0.0.1:8333/b/k?uploads=")
        let virtual = try S3URLBuilder(settings: settings(nil, .virtualHost, region: "eu-west-1"))
        XCTAssertEqual(virtual.url(bucket: "models", key: "m/x.bin"), "https://models.s3.eu-west-1.amazonaws.com/m/x.bin")
        XCTAssertEqual(S3URLBuilder.encode("AZaz09-_.~", keepSlash: false), "AZaz09-_.~")
        XCTAssertEqual(S3URLBuilder.encode("a/b", keepSlash: false), "a%2Fb")
    }

    func testBadEndpointsAreRefused() {
        for endpoint in ["ftp://x", "http://", "http://h/path", "not a url", "http://user:pw@host"] {
            XCTAssertThrowsError(try S3URLBuilder(settings: settings(endpoint)), endpoint)
        }
    }

    func testCredentialsNeverPrint() {
        let credentials = S3Credentials(accessKeyID: "AKID", secretAccessKey: "hunter2", sessionToken: "tok")
        XCTAssertFalse("\(credentials)".contains("hunter2"))
        XCTAssertFalse(String(reflecting: credentials).contains("tok)"))
    }

    func testListPageParsing() throws {
        let xml = """
            <?xml version="1.0" encoding="UTF-8"?>
            <ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><IsTruncated>true</IsTruncated>
            <Contents><Key>a &amp; b</Key><ETag>&#34;e1&#34;</ETag><Size>6</Size></Contents>
            <Contents><Key>c</Key><Size>0</Size></Contents>
            <NextContinuationToken>tok/en=</NextContinuationToken></ListBucketResult>
            """
        let page = try XCTUnwrap(S3XML.listPage(Array(xml.utf8)))
        XCTAssertEqual(page.objects, [ObjectInfo(key: "a & b", size: 6, etag: "\"e1\""), ObjectInfo(key: "c", size: 0)])
        XCTAssertEqual(page.nextContinuationToken, "tok/en=")
        // Truncated without a token would page forever: refused.
        XCTAssertNil(S3XML.listPage(Array("<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>".utf8)))
        XCTAssertNil(S3XML.listPage(Array("<Error/>".utf8)))
        XCTAssertNil(S3XML.listPage(Array("garbage <<".utf8)))
    }

    func testErrorMapping() {
        let body = Array("<Error><Code>SlowDown</Code><Message>Reduce your rate</Message><RequestId>R1</RequestId></Error>".utf8)
        let parsed = S3XML.error(body)
        XCTAssertEqual(parsed, S3XML.ErrorBody(code: "SlowDown", message: "Reduce your rate", requestID: "R1"))
        let context = ErrorContext(operation: "GetObject", store: "s3://b", key: "k")
        func kind(_ status: Int, _ code: String?) -> String {
            "\(S3Client.classify(status: status, code: code, context))".components(separatedBy: ":")[0]
        }
        XCTAssertEqual(kind(503, "SlowDown"), "store asked to slow down")
        XCTAssertEqual(kind(404, "NoSuchKey"), "not found")
        XCTAssertEqual(kind(404, nil), "not found")
        XCTAssertEqual(kind(404, "NoSuchBucket"), "bucket not found")
        XCTAssertEqual(kind(403, "SignatureDoesNotMatch"), "access denied")
        XCTAssertEqual(kind(416, nil), "invalid range")
        XCTAssertEqual(kind(500, "InternalError"), "store error")
        XCTAssertTrue(S3Client.classify(status: 500, code: "InternalError", context).isRetryable)
        XCTAssertTrue(S3Client.classify(status: 429, code: nil, context).isRetryable)
        XCTAssertFalse(S3Client.classify(status: 403, code: "AccessDenied", context).isRetryable)
        XCTAssertFalse(S3Client.classify(status: 400, code: "InvalidArgument", context).isRetryable)
        XCTAssertTrue(ObjectStoreError.transport(context, curlCode: 56).isRetryable)
    }

    func testMultipartPartSizes() {
        XCTAssertEqual(S3Store.multipartPartSize(size: 100 << 20, preferred: 8 << 20), 8 << 20)
        XCTAssertEqual(S3Store.multipartPartSize(size: 100 << 20, preferred: 1 << 20), 5 << 20, "S3's 5 MiB floor")
        let huge: UInt64 = 200 << 30
        let part = S3Store.multipartPartSize(size: huge, preferred: 8 << 20)
        XCTAssertLessThanOrEqual((huge + part - 1) / part, 10_000, "S3's 10,000-part ceiling")
        let body = String(decoding: S3XML.completeMultipartBody(etags: ["\"a\"", "\"b&\""]), as: UTF8.self)
        XCTAssertEqual(
            body,
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>&quot;a&quot;</ETag></Part>"
                + "<Part><PartNumber>2</PartNumber><ETag>&quot;b&amp;&quot;</ETag></Part></CompleteMultipartUpload>")
    }
}

final class RetryPolicyTests: XCTestCase {
    let transient = ObjectStoreError.transport(ErrorContext(operation: "GET", store: "s3://b"), curlCode: 7)

    func testRetriesTransientErrorsThenGivesUp() async {
        let policy = RetryPolicy(maxRetries: 3, baseDelayMilliseconds: 1, maxDelayMilliseconds: 2)
        var attempts = 0
        var heard: [Int] = []
        do {
            _ = try await policy.run { () async throws(ObjectStoreError) -> Int in
                attempts += 1
                throw transient
            } onRetry: { _, retry, _ in heard.append(retry) }
            XCTFail("succeeded")
        } catch {
            guard case .retriesExhausted(let count, let last) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(count, 4)
            XCTAssertEqual(last, transient)
        }
        XCTAssertEqual(attempts, 4)
        XCTAssertEqual(heard, [1, 2, 3])
    }

    func testSucceedsAfterTransientFailure() async throws {
        let policy = RetryPolicy(maxRetries: 3, baseDelayMilliseconds: 1, maxDelayMilliseconds: 2)
        var attempts = 0
        let value = try await policy.run { () async throws(ObjectStoreError) -> Int in
            attempts += 1
            if attempts < 3 { throw transient }
            return 42
        }
        XCTAssertEqual(value, 42)
        XCTAssertEqual(attempts, 3)
    }

    func testPermanentErrorsAreNotRetried() async {
        let policy = RetryPolicy(maxRetries: 5, baseDelayMilliseconds: 1)
        var attempts = 0
        let denied = ObjectStoreError.accessDenied(ErrorContext(operation: "GET", store: "s3://b"))
        do {
            _ = try await policy.run { () async throws(ObjectStoreError) -> Int in
                attempts += 1
                throw denied
            }
        } catch {
            XCTAssertEqual(error, denied)
        }
        XCTAssertEqual(attempts, 1)
    }

    func testBackoffGrowsAndIsCapped() {
        let policy = RetryPolicy(maxRetries: 10, baseDelayMilliseconds: 100, maxDelayMilliseconds: 1000)
        XCTAssertEqual((1...6).map { policy.delayCeiling(beforeRetry: $0) }, [100, 200, 400, 800, 1000, 1000])
        var generator = SystemRandomNumberGenerator()
        for retry in 1...8 {
            XCTAssertLessThanOrEqual(policy.delay(beforeRetry: retry, using: &generator), .milliseconds(1000))
        }
        XCTAssertEqual(RetryPolicy(maxRetries: 80, baseDelayMilliseconds: 100).delayCeiling(beforeRetry: 70), 10_000)
    }
}

final class S3RequestTests: XCTestCase {
    func testRequestsAreSignedWithTokenAndPayloadHeader() throws {
        let credentials = S3Credentials(accessKeyID: "AKID", secretAccessKey: "SECRET", sessionToken: "TOKEN")
        let client = try S3Client(
            settings: S3Settings(endpoint: "https://s3.example.com", region: "eu-central-1", credentials: credentials),
            logger: .init(label: "test"))
        let request = client.request(.get, bucket: "b", key: "k")
        XCTAssertEqual(request.url, "https://s3.example.com/b/k")
        XCTAssertEqual(request.signing?.provider, "aws:amz:eu-central-1:s3")
        XCTAssertEqual(request.signing?.userAndSecret, "AKID:SECRET")
        XCTAssertTrue(request.headers.contains("x-amz-security-token: TOKEN"))
        XCTAssertTrue(request.headers.contains("x-amz-content-sha256: UNSIGNED-PAYLOAD"))

        let anonymous = try S3Client(settings: S3Settings(endpoint: "http://h:1", credentials: nil), logger: .init(label: "t"))
        let unsigned = anonymous.request(.head, bucket: "b", key: "k")
        XCTAssertNil(unsigned.signing)
        XCTAssertFalse(unsigned.headers.contains { $0.hasPrefix("x-amz-security-token") })
    }
}

final class PacerTests: XCTestCase {
    /// A lower bound only (machines are noisy; nothing here can finish early).
    func testReservationsAreSpreadAtTheRate() async throws {
        let pacer = Pacer(bytesPerSecond: 10 << 20)
        let started = ContinuousClock.now
        for _ in 0..<5 { try await pacer.reserve(1 << 20) }  // the first starts at once
        XCTAssertGreaterThanOrEqual(ContinuousClock.now - started, .milliseconds(390))
    }
}
