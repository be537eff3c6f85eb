// Encoding and decoding of every message: one function per direction, each a
// switch over the message types, so that docs/protocol.md's tables and this
// file can be read side by side.

extension Request {
    /// The whole frame for this request.
    public func frame(request id: UInt32) -> Frame {
        var w = ByteWriter()
        switch self {
        case .hello(let hello):
            w.string(hello.magic)
            w.u16(hello.minVersion)
            w.u16(hello.maxVersion)
            w.string(hello.client)
        case .resolve(let model), .pin(let model), .unpin(let model):
            w.string(model)
        case .stat(let model, let path), .open(let model, let path):
            w.string(model)
            w.string(path)
        case .list, .stats:
            break
        case .read(let model, let path, let offset, let length):
            w.string(model)
            w.string(path)
            w.u64(offset)
            w.u32(length)
        case .preload(let model, let tier, let pin):
            w.string(model)
            w.u8(tier.rawValue)
            w.bool(pin)
        case .evict(let model, let tier):
            w.string(model)
            w.u8(tier.rawValue)
        }
        return Frame(type: type.rawValue, request: id, payload: w.bytes)
    }

    /// Parses a request frame. A reply type or an unknown number is
    /// `unknownType` (the daemon answers `unknown-operation` and goes on);
    /// a payload that does not parse exactly is `malformed`.
    public init(decoding frame: Frame) throws(WireError) {
        guard let type = MessageType(rawValue: frame.type), type.isRequest else {
            throw .unknownType(frame.type, request: frame.request)
        }
        var r = ByteReader(frame.payload[...])
        switch type {
        case .hello:
            self = .hello(Hello(magic: try r.string(), minVersion: try r.u16(), maxVersion: try r.u16(), client: try r.string()))
        case .resolve: self = .resolve(model: try r.string())
        case .stat: self = .stat(model: try r.string(), path: try r.string())
        case .list: self = .list
        case .read: self = .read(model: try r.string(), path: try r.string(), offset: try r.u64(), length: try r.u32())
        case .open: self = .open(model: try r.string(), path: try r.string())
        case .preload: self = .preload(model: try r.string(), tier: try Self.tier(&r), pin: try r.bool())
        case .pin: self = .pin(model: try r.string())
        case .unpin: self = .unpin(model: try r.string())
        case .evict: self = .evict(model: try r.string(), tier: try Self.tier(&r))
        case .stats: self = .stats
        default: throw .unknownType(frame.type, request: frame.request)
        }
        try r.finish()
    }

    static func tier(_ r: inout ByteReader) throws(WireError) -> Tier {
        let raw = try r.u8()
        guard let tier = Tier(rawValue: raw) else { throw .malformed("tier \(raw) is neither 1 (nvme) nor 2 (ram)") }
        return tier
    }
}

extension Response {
    /// The whole frame for this reply.
    public func frame(request id: UInt32) -> Frame {
        var w = ByteWriter()
        switch self {
        case .ok(let message): w.string(message)
        case .helloOK(let h):
            w.u16(h.version)
            w.string(h.server)
            w.u32(h.maxRequestFrame)
            w.u32(h.maxReadLength)
            w.u16(h.maxInFlight)
            w.u32(h.blockSize)
        case .model(let info): Self.write(info, &w)
        case .file(let info), .opened(let info): Self.write(info, &w)
        case .models(let models):
            w.list(models) { w, m in
                w.string(m.model)
                w.u32(m.files)
                w.u64(m.bytes)
                w.u64(m.nvmeBytes)
                w.u64(m.ramBytes)
                w.bool(m.pinned)
            }
        case .data(let bytes): w.raw(bytes)
        case .progress(let done, let total):
            w.u64(done)
            w.u64(total)
        case .stats(let json): w.string(json)
        case .error(let code, let message):
            w.u16(code.rawValue)
            w.string(message)
        }
        return Frame(type: type.rawValue, request: id, payload: w.bytes)
    }

    /// Parses a reply frame; anything but a known reply type is malformed.
    public init(decoding frame: Frame) throws(WireError) {
        guard let type = MessageType(rawValue: frame.type), !type.isRequest else {
            throw .malformed("\(frame.type) is not a reply type")
        }
        var r = ByteReader(frame.payload[...])
        switch type {
        case .ok: self = .ok(try r.string())
        case .helloOK:
            self = .helloOK(HelloOK(
                version: try r.u16(), server: try r.string(), maxRequestFrame: try r.u32(),
                maxReadLength: try r.u32(), maxInFlight: try r.u16(), blockSize: try r.u32()))
        case .model:
            self = .model(ModelInfo(
                model: try r.string(), snapshot: try r.string(), pinned: try r.bool(),
                files: try r.list(minimumItemSize: 21) { (r) throws(WireError) in try Self.fileInfo(&r) }))
        case .file: self = .file(try Self.fileInfo(&r))
        case .opened: self = .opened(try Self.fileInfo(&r))
        case .models:
            self = .models(try r.list(minimumItemSize: 31) { (r) throws(WireError) in
                ModelSummary(
                    model: try r.string(), files: try r.u32(), bytes: try r.u64(), nvmeBytes: try r.u64(),
                    ramBytes: try r.u64(), pinned: try r.bool())
            })
        case .data: self = .data(Array(r.rest()))
        case .progress: self = .progress(done: try r.u64(), total: try r.u64())
        case .statsReply: self = .stats(json: try r.string())
        case .error: self = .error(ErrorCode(rawValue: try r.u16()), try r.string())
        default: throw .malformed("\(frame.type) is not a reply type")
        }
        try r.finish()
    }

    static func write(_ info: ModelInfo, _ w: inout ByteWriter) {
        w.string(info.model)
        w.string(info.snapshot)
        w.bool(info.pinned)
        w.list(info.files) { w, f in write(f, &w) }
    }

    static func write(_ f: FileInfo, _ w: inout ByteWriter) {
        w.string(f.path)
        w.u64(f.size)
        w.string(f.digest)
        w.u8(f.nvme.rawValue)
        w.u64(f.ramBytes)
    }

    static func fileInfo(_ r: inout ByteReader) throws(WireError) -> FileInfo {
        let path = try r.string()
        let size = try r.u64()
        let digest = try r.string()
        let raw = try r.u8()
        guard let nvme = StagedState(rawValue: raw) else { throw .malformed("nvme state \(raw) is not 0, 1 or 2") }
        return FileInfo(path: path, size: size, digest: digest, nvme: nvme, ramBytes: try r.u64())
    }
}
