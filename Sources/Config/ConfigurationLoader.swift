import Foundation

/// Finds, reads, merges and validates the configuration.
public struct ConfigurationLoader: Sendable {
    public var environment: [String: String]
    /// Where ~/.aws/credentials is looked for.
    public var homeDirectory: String
    public var currentDirectory: String

    public init(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        homeDirectory: String = NSHomeDirectory(),
        currentDirectory: String = FileManager.default.currentDirectoryPath
    ) {
        self.environment = environment
        self.homeDirectory = homeDirectory
        self.currentDirectory = currentDirectory
    }

    /// The file to read: `explicit` (from --config), else $WEIGHTCACHE_CONFIG,
    /// else ./config.json, else /etc/weightcache/config.json, else none.
    /// A path named explicitly is returned even if missing, so that reading it fails loudly.
    public func locate(explicit: String?) -> String? {
        if let explicit { return explicit }
        if let named = environment["WEIGHTCACHE_CONFIG"], !named.isEmpty { return named }
        for candidate in [currentDirectory + "/config.json", "/etc/weightcache/config.json"]
        where FileManager.default.fileExists(atPath: candidate) {
            return candidate
        }
        return nil
    }

    /// Defaults, then the file at `path`, then the environment, then `flags`
    /// (key -> value text, as `--set key=value` gives them), then credentials
    /// from ~/.aws/credentials when none were given; then validated.
    public func load(file path: String?, flags: [(key: String, value: String)] = []) throws(ConfigError) -> Configuration {
        var config = Configuration()
        if let path { try applyFile(path, to: &config) }
        for setting in Setting.all {
            for name in setting.aliases + [setting.environment] {
                if let value = environment[name] { try apply(setting, .string(value), source: "environment \(name)", to: &config) }
            }
        }
        for flag in flags {
            guard let setting = Setting.all.first(where: { $0.key == flag.key }) else {
                throw .unknownKey(key: flag.key, source: "flag --set")
            }
            try apply(setting, .string(flag.value), source: "flag --set \(flag.key)", to: &config)
        }
        if config.s3.accessKeyID == nil && config.s3.secretAccessKey == nil {
            try applySharedCredentials(to: &config)
        }
        try validate(config)
        return config
    }

    private func apply(_ setting: Setting, _ value: JSONValue, source: String, to config: inout Configuration) throws(ConfigError) {
        do {
            try setting.apply(&config, value)
        } catch {
            throw .invalidValue(
                key: setting.key, value: setting.secret ? "<redacted>" : value.description, source: source,
                reason: error.reason)
        }
    }

    private func applyFile(_ path: String, to config: inout Configuration) throws(ConfigError) {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw .unreadableFile(path: path, reason: (error as NSError).localizedDescription)
        }
        let root: JSONValue
        do { root = try JSONDecoder().decode(JSONValue.self, from: data) } catch {
            throw .malformedFile(path: path, reason: String(describing: error))
        }
        guard case .object(let sections) = root else {
            throw .malformedFile(path: path, reason: "the top level must be an object")
        }
        // Walk the document in key order so that the first bad key reported is stable.
        for (section, body) in sections.sorted(by: { $0.key < $1.key }) {
            if section == "$comment" { continue }
            guard case .object(let entries) = body else {
                throw .unknownKey(key: section, source: path)
            }
            for (name, value) in entries.sorted(by: { $0.key < $1.key }) {
                let key = section + "." + name
                guard let setting = Setting.all.first(where: { $0.key == key }) else {
                    throw .unknownKey(key: key, source: path)
                }
                try apply(setting, value, source: path, to: &config)
            }
        }
    }

    /// ~/.aws/credentials (or $AWS_SHARED_CREDENTIALS_FILE), profile s3.profile.
    private func applySharedCredentials(to config: inout Configuration) throws(ConfigError) {
        let path = environment["AWS_SHARED_CREDENTIALS_FILE"] ?? homeDirectory + "/.aws/credentials"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        let profile = SharedCredentials.parse(text)[config.s3.profile] ?? [:]
        config.s3.accessKeyID = profile["aws_access_key_id"]
        config.s3.secretAccessKey = profile["aws_secret_access_key"]
        config.s3.sessionToken = profile["aws_session_token"] ?? config.s3.sessionToken
    }

    /// Rules that span keys.
    private func validate(_ config: Configuration) throws(ConfigError) {
        let haveKey = config.s3.accessKeyID != nil
        let haveSecret = config.s3.secretAccessKey != nil
        if haveKey != haveSecret {
            throw .invalidValue(
                key: haveKey ? "s3.secretAccessKey" : "s3.accessKeyId", value: "null", source: "configuration",
                reason: "an access key and a secret key go together: set both or neither")
        }
        if config.transfer.retryMaxDelayMilliseconds < config.transfer.retryBaseDelayMilliseconds {
            throw .invalidValue(
                key: "transfer.retryMaxDelayMilliseconds", value: String(config.transfer.retryMaxDelayMilliseconds),
                source: "configuration", reason: "must not be below transfer.retryBaseDelayMilliseconds")
        }
    }
}

/// The INI format of ~/.aws/credentials: `[profile]` then `key = value` lines.
enum SharedCredentials {
    static func parse(_ text: String) -> [String: [String: String]] {
        var profiles: [String: [String: String]] = [:]
        var current: String? = nil
        for raw in text.split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                var name = line.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
                if name.hasPrefix("profile ") { name = String(name.dropFirst(8)) }
                current = name
                continue
            }
            guard let current, let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            profiles[current, default: [:]][key] = value
        }
        return profiles
    }
}
