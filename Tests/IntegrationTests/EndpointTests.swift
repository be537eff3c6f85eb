// Addressing styles and TLS against the real server: virtual-host buckets
// (http://BUCKET.localhost:PORT) and https with a custom CA bundle.
import Foundation
import Logging
@testable import ObjectStore
import XCTest

final class EndpointTests: XCTestCase {
    let logger = Logger(label: "test")

    func testVirtualHostAddressing() async throws {
        var settings = sharedServer.settings()
        // SeaweedFS runs with -s3.domainName=localhost; curl resolves *.localhost to loopback.
        settings.endpoint = sharedServer.endpoint.replacingOccurrences(of: "127.0.0.1", with: "localhost")
        settings.addressing = .virtualHost
        let client = try S3Client(settings: settings, logger: logger)
        let bucket = uniqueBucketName("vhost")
        try await client.createBucket(bucket)
        let store = client.bucket(bucket)
        XCTAssertTrue(client.request(.get, bucket: bucket, key: "k").url.hasPrefix("http://\(bucket).localhost:"))
        try await StoreContract.basics(store)

        // The same bucket seen path-style: one store, two addressings.
        let pathStyle = try S3Client(settings: sharedServer.settings(), logger: logger).bucket(bucket)
        let got = try await pathStyle.get("m/sub/b.bin")
        XCTAssertEqual(got, Array(repeating: 2, count: 2000))
    }

    func testHTTPSWithCABundle() async throws {
        let https = try XCTUnwrap(sharedServer.httpsEndpoint, "the test server has no https port")
        var settings = sharedServer.settings()
        settings.endpoint = https
        settings.caBundle = sharedServer.caBundle
        let client = try S3Client(settings: settings, logger: logger)
        let bucket = uniqueBucketName("tls")
        try await client.createBucket(bucket)
        try await StoreContract.basics(client.bucket(bucket))
        try await StoreContract.parallelDownload(client.bucket(bucket), size: 24 << 20)
    }

    func testUntrustedCertificateFailsAtOnceWithoutRetries() async throws {
        let https = try XCTUnwrap(sharedServer.httpsEndpoint, "the test server has no https port")
        var settings = sharedServer.settings(
            retry: RetryPolicy(maxRetries: 5, baseDelayMilliseconds: 2000, maxDelayMilliseconds: 2000))
        settings.endpoint = https
        settings.caBundle = nil  // system CAs: the self-signed certificate is not among them
        let store = try S3Client(settings: settings, logger: logger).bucket("any")
        let started = ContinuousClock.now
        do {
            _ = try await store.head("k")
            XCTFail("an untrusted certificate was accepted")
        } catch {
            guard case .transport(let context, let code) = error else { return XCTFail("expected transport, got \(error)") }
            XCTAssertEqual(code, 60, "CURLE_PEER_FAILED_VERIFICATION")
            XCTAssertTrue(context.message?.contains("certificate") ?? false, "\(error)")
        }
        XCTAssertLessThan(ContinuousClock.now - started, .seconds(2), "a trust failure was retried")
    }
}
