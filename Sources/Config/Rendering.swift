import Foundation

extension Configuration {
    /// The configuration as config.json would hold it, secrets masked: what
    /// `weightcache config` prints, safe to paste into an issue.
    public func renderedJSON() -> String {
        func quote(_ s: String?) -> String {
            guard let s else { return "null" }
            let data = try! JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])
            return String(decoding: data.dropFirst().dropLast(), as: UTF8.self)
        }
        func list(_ names: [String]) -> String { "[" + names.map { quote($0) }.joined(separator: ", ") + "]" }
        func secret(_ s: String?) -> String { s == nil ? "null" : "\"<redacted>\"" }
        return """
            {
              "socket": {
                "path": \(quote(socket.path)),
                "mode": "0\(String(socket.mode, radix: 8))",
                "group": \(quote(socket.group))
              },
              "metrics": {
                "address": \(quote(metrics.address))
              },
              "daemon": {
                "maxRequestFrameBytes": "\(ByteSize.format(daemon.maxRequestFrameBytes))",
                "maxReadBytes": "\(ByteSize.format(daemon.maxReadBytes))",
                "maxInFlight": \(daemon.maxInFlight),
                "maxConnections": \(daemon.maxConnections),
                "idleTimeoutSeconds": \(daemon.idleTimeoutSeconds),
                "drainTimeoutSeconds": \(daemon.drainTimeoutSeconds),
                "preload": \(list(daemon.preload))
              },
              "access": {
                "readUsers": \(list(access.readUsers)),
                "readGroups": \(list(access.readGroups)),
                "adminUsers": \(list(access.adminUsers)),
                "adminGroups": \(list(access.adminGroups))
              },
              "staging": {
                "directory": \(quote(staging.directory)),
                "budgetBytes": "\(ByteSize.format(staging.budgetBytes))",
                "minFreeBytes": "\(ByteSize.format(staging.minFreeBytes))",
                "durability": "\(staging.durability.rawValue)",
                "writes": "\(staging.writes.rawValue)"
              },
              "ramCache": {
                "budgetBytes": "\(ByteSize.format(ramCache.budgetBytes))",
                "blockSize": "\(ByteSize.format(ramCache.blockSize))",
                "policy": "\(ramCache.policy.rawValue)",
                "readAheadBlocks": \(ramCache.readAheadBlocks),
                "lockBytes": "\(ByteSize.format(ramCache.lockBytes))",
                "pages": "\(ramCache.pages.rawValue)"
              },
              "s3": {
                "endpoint": \(quote(s3.endpoint)),
                "region": \(quote(s3.region)),
                "addressing": "\(s3.addressing.rawValue)",
                "accessKeyId": \(quote(s3.accessKeyID)),
                "secretAccessKey": \(secret(s3.secretAccessKey)),
                "sessionToken": \(secret(s3.sessionToken)),
                "profile": \(quote(s3.profile)),
                "caBundle": \(quote(s3.caBundle))
              },
              "models": {
                "root": \(quote(models.root))
              },
              "transfer": {
                "partSize": "\(ByteSize.format(transfer.partSize))",
                "concurrency": \(transfer.concurrency),
                "retries": \(transfer.retries),
                "retryBaseDelayMilliseconds": \(transfer.retryBaseDelayMilliseconds),
                "retryMaxDelayMilliseconds": \(transfer.retryMaxDelayMilliseconds),
                "connectTimeoutMilliseconds": \(transfer.connectTimeoutMilliseconds),
                "lowSpeedTimeoutSeconds": \(transfer.lowSpeedTimeoutSeconds),
                "maxBytesPerSecond": "\(ByteSize.format(transfer.maxBytesPerSecond))"
              }
            }
            """
    }
}
