import Foundation

/// Access key, secret and optional session token. The secret and the token
/// never appear in descriptions, logs or errors.
public struct S3Credentials: Sendable, Equatable, CustomStringConvertible {
    public var accessKeyID: String
    public var secretAccessKey: String
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    public var description: String {
        "S3Credentials(accessKeyID: \(accessKeyID), secretAccessKey: <redacted>"
            + (sessionToken == nil ? ")" : ", sessionToken: <redacted>)")
    }
}

/// How a bucket is named in a request URL.
public enum S3Addressing: String, Sendable, Equatable, CaseIterable {
    /// `http://host/bucket/key`: MinIO, SeaweedFS, Ceph and most local servers.
    case path
    /// `https://bucket.host/key`: AWS's default.
    case virtualHost = "virtual-host"
}

/// Everything an `S3Client` needs to reach a store.
public struct S3Settings: Sendable, Equatable {
    /// `http(s)://host[:port]`; nil means AWS: `https://s3.REGION.amazonaws.com`.
    public var endpoint: String?
    public var region: String
    public var addressing: S3Addressing
    /// nil sends unsigned (anonymous) requests.
    public var credentials: S3Credentials?
    /// A PEM bundle of CAs for https; nil uses the system's.
    public var caBundle: String?
    public var retry: RetryPolicy
    public var connectTimeoutMilliseconds: Int
    /// A transfer under 1 KiB/s for this long counts as a timeout (and is retried).
    public var lowSpeedTimeoutSeconds: Int
    /// Part size for multipart uploads (raised as needed to stay under 10,000 parts).
    public var partSize: UInt64
    /// Parallel requests per upload or download; also sizes the connection pool.
    public var concurrency: Int

    public init(
        endpoint: String?, region: String = "us-east-1", addressing: S3Addressing = .path,
        credentials: S3Credentials?, caBundle: String? = nil, retry: RetryPolicy = RetryPolicy(),
        connectTimeoutMilliseconds: Int = 10_000, lowSpeedTimeoutSeconds: Int = 30,
        partSize: UInt64 = 8 << 20, concurrency: Int = ParallelDownloader.defaultConcurrency
    ) {
        self.endpoint = endpoint
        self.region = region
        self.addressing = addressing
        self.credentials = credentials
        self.caBundle = caBundle
        self.retry = retry
        self.connectTimeoutMilliseconds = connectTimeoutMilliseconds
        self.lowSpeedTimeoutSeconds = lowSpeedTimeoutSeconds
        self.partSize = partSize
        self.concurrency = concurrency
    }
}

/// Builds request URLs whose path and query are already in SigV4 canonical
/// form. libcurl 7.88 signs the URL as given: it neither sorts query
/// parameters nor re-encodes them (measured against SeaweedFS: unsorted
/// parameters fail with SignatureDoesNotMatch), so we do both here.
struct S3URLBuilder: Sendable, Equatable {
    let scheme: String
    let host: String
    let port: Int?
    let addressing: S3Addressing

    init(settings: S3Settings) throws(ObjectStoreError) {
        let endpoint = settings.endpoint ?? "https://s3.\(settings.region).amazonaws.com"
        guard let url = URLComponents(string: endpoint), let scheme = url.scheme?.lowercased(),
            scheme == "http" || scheme == "https", let host = url.host, !host.isEmpty,
            url.path.isEmpty || url.path == "/", url.query == nil, url.user == nil
        else {
            throw .invalidKey(endpoint, reason: "not an S3 endpoint URL (want http(s)://host[:port])")
        }
        self.scheme = scheme
        self.host = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        self.port = url.port
        self.addressing = settings.addressing
    }

    func url(bucket: String?, key: String? = nil, query: [(String, String)] = []) -> String {
        var authority = host
        var path = ""
        if let bucket {
            switch addressing {
            case .path: path = "/" + S3URLBuilder.encode(bucket, keepSlash: false)
            case .virtualHost: authority = bucket + "." + host
            }
        }
        if let port { authority += ":\(port)" }
        path += "/" + (key.map { S3URLBuilder.encode($0, keepSlash: true) } ?? "")
        return "\(scheme)://\(authority)\(path)" + S3URLBuilder.query(query)
    }

    /// AWS's UriEncode: every byte but A-Z a-z 0-9 - _ . ~ (and `/` in paths) as %XX.
    static func encode(_ text: String, keepSlash: Bool) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"),
                UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: "/") where keepSlash:
                out.append("/")
            default:
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }

    /// `?a=1&b=2`, sorted by name, every name and value encoded; "" for none.
    static func query(_ items: [(String, String)]) -> String {
        guard !items.isEmpty else { return "" }
        let encoded = items.map { (encode($0.0, keepSlash: false), encode($0.1, keepSlash: false)) }
            .sorted { $0.0 < $1.0 }
        return "?" + encoded.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
