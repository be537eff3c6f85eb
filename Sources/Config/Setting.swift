import Foundation

/// One configuration key: its name, environment variable, documentation and
/// parser. Values arrive as JSON values (from the file) or as text (from the
/// environment and flags); each parser accepts both.
struct Setting {
    let key: String
    /// `WEIGHTCACHE_` + the key in upper snake case: `transfer.partSize` -> `WEIGHTCACHE_TRANSFER_PART_SIZE`.
    var environment: String { "WEIGHTCACHE_" + Setting.snake(key) }
    /// Other variables that set this key too (AWS's standard ones, short
    /// forms); weaker than `environment`.
    let aliases: [String]
    let secret: Bool
    let apply: (inout Configuration, JSONValue) throws(Setting.Failure) -> Void

    /// A parser's complaint, before the key and the source are known.
    struct Failure: Error { let reason: String }

    static func snake(_ key: String) -> String {
        var out = ""
        for ch in key {
            if ch == "." { out.append("_") } else if ch.isUppercase { out += "_" + String(ch) } else { out += ch.uppercased() }
        }
        return out
    }
}

extension Setting {
    static func text(_ value: JSONValue) throws(Failure) -> String {
        guard case .string(let s) = value else { throw Failure(reason: "expected a string") }
        return s
    }

    static func bytes(
        _ key: String, _ path: WritableKeyPath<Configuration, UInt64>, min: UInt64 = 0, max: UInt64 = .max,
        powerOfTwo: Bool = false
    ) -> Setting {
        Setting(key: key, aliases: [], secret: false) { (config, value) throws(Failure) in
            let parsed: UInt64
            switch value {
            case .integer(let n) where n >= 0: parsed = UInt64(n)
            case .string(let s):
                guard let b = ByteSize.parse(s) else {
                    throw Failure(reason: "not a byte size (an integer, or a number with B, KB, KiB, MB, MiB, GB, GiB, TB or TiB)")
                }
                parsed = b
            default: throw Failure(reason: "expected a byte size such as \"8MiB\" or 8388608")
            }
            guard parsed >= min && parsed <= max else {
                throw Failure(reason: "must be between \(ByteSize.format(min)) and \(ByteSize.format(max))")
            }
            if powerOfTwo && parsed & (parsed - 1) != 0 { throw Failure(reason: "must be a power of two") }
            config[keyPath: path] = parsed
        }
    }

    static func integer(_ key: String, _ path: WritableKeyPath<Configuration, Int>, _ range: ClosedRange<Int>) -> Setting {
        Setting(key: key, aliases: [], secret: false) { (config, value) throws(Failure) in
            let parsed: Int? =
                switch value {
                case .integer(let n): Int(exactly: n)
                case .string(let s): Int(s.trimmingCharacters(in: .whitespaces))
                default: nil
                }
            guard let parsed else { throw Failure(reason: "expected an integer") }
            guard range.contains(parsed) else {
                throw Failure(reason: "must be between \(range.lowerBound) and \(range.upperBound)")
            }
            config[keyPath: path] = parsed
        }
    }

    static func string(
        _ key: String, _ path: WritableKeyPath<Configuration, String>, aliases: [String] = [],
        check: @escaping (String) -> String? = { $0.isEmpty ? "must not be empty" : nil }
    ) -> Setting {
        Setting(key: key, aliases: aliases, secret: false) { (config, value) throws(Failure) in
            let s = try text(value)
            if let problem = check(s) { throw Failure(reason: problem) }
            config[keyPath: path] = s
        }
    }

    /// A string that may be null (or "" from the environment) to unset it.
    static func optional(
        _ key: String, _ path: WritableKeyPath<Configuration, String?>, aliases: [String] = [], secret: Bool = false,
        check: @escaping (String) -> String? = { _ in nil }
    ) -> Setting {
        Setting(key: key, aliases: aliases, secret: secret) { (config, value) throws(Failure) in
            if value == .null { config[keyPath: path] = nil; return }
            let s = try text(value)
            if s.isEmpty { config[keyPath: path] = nil; return }
            if let problem = check(s) { throw Failure(reason: problem) }
            config[keyPath: path] = s
        }
    }

    /// A list of user or group names or numeric ids: a JSON array, or
    /// comma-separated text from the environment and flags.
    static func names(_ key: String, _ path: WritableKeyPath<Configuration, [String]>, wildcard: Bool) -> Setting {
        Setting(key: key, aliases: [], secret: false) { (config, value) throws(Failure) in
            var names: [String] = []
            switch value {
            case .null: break
            case .array(let items):
                for item in items {
                    switch item {
                    case .string(let s): names.append(s)
                    case .integer(let n) where n >= 0: names.append(String(n))
                    default: throw Failure(reason: "expected names or ids, got \(item)")
                    }
                }
            case .string(let s): names = s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            default: throw Failure(reason: "expected a list of user or group names or ids")
            }
            for name in names {
                if name == "*" {
                    guard wildcard else { throw Failure(reason: "\"*\" is only allowed in read lists") }
                    continue
                }
                let valid = name.allSatisfy { $0.isLetter || $0.isNumber || "._-".contains($0) }
                guard valid, !name.isEmpty, name.count <= 64 else { throw Failure(reason: "\(String(reflecting: name)) is not a user or group name") }
            }
            config[keyPath: path] = names
        }
    }

    /// Preload entries: "NAME[@REV] [tier=nvme|ram] [pin]", as a JSON array
    /// of strings, or ";"-separated text from the environment and flags.
    static func preloadList(_ key: String, _ path: WritableKeyPath<Configuration, [String]>) -> Setting {
        Setting(key: key, aliases: [], secret: false) { (config, value) throws(Failure) in
            var entries: [String] = []
            switch value {
            case .null: break
            case .array(let items):
                for item in items {
                    guard case .string(let s) = item else { throw Failure(reason: "expected strings such as \"org/model@main tier=ram pin\"") }
                    entries.append(s)
                }
            case .string(let s): entries = s.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            default: throw Failure(reason: "expected a list of \"NAME[@REV] [tier=nvme|ram] [pin]\" entries")
            }
            for entry in entries {
                let words = entry.split(separator: " ")
                guard let first = words.first, !first.isEmpty else { throw Failure(reason: "an empty preload entry") }
                for word in words.dropFirst() where !["tier=nvme", "tier=ram", "pin"].contains(word) {
                    throw Failure(reason: "\(String(reflecting: String(word))) in \(String(reflecting: entry)): expected tier=nvme, tier=ram or pin")
                }
            }
            config[keyPath: path] = entries
        }
    }

    static func fileMode(_ key: String, _ path: WritableKeyPath<Configuration, UInt32>) -> Setting {
        Setting(key: key, aliases: [], secret: false) { (config, value) throws(Failure) in
            let s = try text(value)
            guard let mode = UInt32(s, radix: 8), mode <= 0o777 else {
                throw Failure(reason: "expected octal permission bits such as \"0660\"")
            }
            config[keyPath: path] = mode
        }
    }

    /// One of a few names, each a case of `Choice` (listed in a bad value's
    /// message in declaration order).
    static func choice<Choice: RawRepresentable & CaseIterable>(
        _ key: String, _ path: WritableKeyPath<Configuration, Choice>
    ) -> Setting where Choice.RawValue == String {
        Setting(key: key, aliases: [], secret: false) { (config, value) throws(Failure) in
            guard let choice = Choice(rawValue: try text(value)) else {
                throw Failure(reason: "expected one of: " + Choice.allCases.map(\.rawValue).joined(separator: ", "))
            }
            config[keyPath: path] = choice
        }
    }

    static func addressProblem(_ s: String) -> String? {
        guard let colon = s.lastIndex(of: ":"), let port = UInt16(s[s.index(after: colon)...]), port > 0,
            !s[..<colon].isEmpty
        else { return "expected HOST:PORT, such as 127.0.0.1:9464" }
        return nil
    }

    static func endpointProblem(_ s: String) -> String? {
        guard let url = URLComponents(string: s), let scheme = url.scheme?.lowercased(),
            scheme == "http" || scheme == "https", let host = url.host, !host.isEmpty
        else { return "expected an http:// or https:// URL" }
        guard url.user == nil, url.password == nil else { return "credentials do not belong in the URL" }
        guard url.path.isEmpty || url.path == "/", url.query == nil else { return "expected no path or query" }
        return nil
    }

    static func modelsRootProblem(_ s: String) -> String? {
        guard s.hasPrefix("s3://") || s.hasPrefix("file:///") else {
            return "expected s3://BUCKET[/PREFIX] or file:///DIRECTORY"
        }
        guard s.hasPrefix("file://") || s.dropFirst(5).prefix(while: { $0 != "/" }).count >= 3 else {
            return "no bucket name"
        }
        return nil
    }

    /// Every key there is. docs/configuration.md documents each (a test checks).
    static var all: [Setting] { [
        .string("socket.path", \.socket.path),
        .fileMode("socket.mode", \.socket.mode),
        .optional("socket.group", \.socket.group),
        .bytes("daemon.maxRequestFrameBytes", \.daemon.maxRequestFrameBytes, min: 1 << 10, max: 16 << 20),
        .bytes("daemon.maxReadBytes", \.daemon.maxReadBytes, min: 4 << 10, max: 256 << 20),
        .integer("daemon.maxInFlight", \.daemon.maxInFlight, 1...1024),
        .integer("daemon.maxConnections", \.daemon.maxConnections, 1...65_536),
        .integer("daemon.idleTimeoutSeconds", \.daemon.idleTimeoutSeconds, 1...86_400),
        .integer("daemon.drainTimeoutSeconds", \.daemon.drainTimeoutSeconds, 0...3600),
        .preloadList("daemon.preload", \.daemon.preload),
        .names("access.readUsers", \.access.readUsers, wildcard: true),
        .names("access.readGroups", \.access.readGroups, wildcard: true),
        .names("access.adminUsers", \.access.adminUsers, wildcard: false),
        .names("access.adminGroups", \.access.adminGroups, wildcard: false),
        .optional("metrics.address", \.metrics.address, check: addressProblem),
        .string("staging.directory", \.staging.directory),
        .bytes("staging.budgetBytes", \.staging.budgetBytes, min: 1 << 20),
        .bytes("staging.minFreeBytes", \.staging.minFreeBytes),
        .choice("staging.durability", \.staging.durability),
        .choice("staging.writes", \.staging.writes),
        .bytes("ramCache.budgetBytes", \.ramCache.budgetBytes, min: 1 << 20),
        .bytes("ramCache.blockSize", \.ramCache.blockSize, min: 64 << 10, max: 64 << 20, powerOfTwo: true),
        .choice("ramCache.policy", \.ramCache.policy),
        .integer("ramCache.readAheadBlocks", \.ramCache.readAheadBlocks, 0...256),
        .bytes("ramCache.lockBytes", \.ramCache.lockBytes),
        .choice("ramCache.pages", \.ramCache.pages),
        .optional("s3.endpoint", \.s3.endpoint, aliases: ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"], check: endpointProblem),
        .string("s3.region", \.s3.region, aliases: ["AWS_DEFAULT_REGION", "AWS_REGION"]),
        .choice("s3.addressing", \.s3.addressing),
        .optional("s3.accessKeyId", \.s3.accessKeyID, aliases: ["AWS_ACCESS_KEY_ID"]),
        .optional("s3.secretAccessKey", \.s3.secretAccessKey, aliases: ["AWS_SECRET_ACCESS_KEY"], secret: true),
        .optional("s3.sessionToken", \.s3.sessionToken, aliases: ["AWS_SESSION_TOKEN"], secret: true),
        .string("s3.profile", \.s3.profile, aliases: ["AWS_PROFILE"]),
        .optional("s3.caBundle", \.s3.caBundle, aliases: ["AWS_CA_BUNDLE"]),
        .string("models.root", \.models.root, aliases: ["WEIGHTCACHE_MODELS"], check: modelsRootProblem),
        .bytes("transfer.partSize", \.transfer.partSize, min: 1 << 20, max: 5 << 30),
        .integer("transfer.concurrency", \.transfer.concurrency, 1...256),
        .integer("transfer.retries", \.transfer.retries, 0...50),
        .integer("transfer.retryBaseDelayMilliseconds", \.transfer.retryBaseDelayMilliseconds, 0...60_000),
        .integer("transfer.retryMaxDelayMilliseconds", \.transfer.retryMaxDelayMilliseconds, 0...600_000),
        .integer("transfer.connectTimeoutMilliseconds", \.transfer.connectTimeoutMilliseconds, 100...600_000),
        .integer("transfer.lowSpeedTimeoutSeconds", \.transfer.lowSpeedTimeoutSeconds, 1...3600),
        .bytes("transfer.maxBytesPerSecond", \.transfer.maxBytesPerSecond),
    ] }
}
