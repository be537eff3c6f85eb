import Testing
import Wire

/// Every request and reply, with awkward values (empty strings, unicode,
/// extremes), encodes and decodes back to itself, through a FrameDecoder fed
/// one byte at a time.
@Suite struct CodecTests {
    static let file = FileInfo(path: "model-00001-of-00002.safetensors", size: .max, digest: String(repeating: "a", count: 32), nvme: .partial, ramBytes: 4 << 20)

    static let requests: [Request] = [
        .hello(Hello(client: "python")),
        .hello(Hello(magic: "", minVersion: 0, maxVersion: .max, client: "ünïcødé ✓")),
        .resolve(model: "org/llama-3-8b@main"),
        .stat(model: "tiny", path: "sub/dir/file.bin"),
        .list,
        .read(model: "m", path: "p", offset: .max, length: .max),
        .read(model: "", path: "", offset: 0, length: 0),
        .open(model: "m@r", path: "a.safetensors"),
        .preload(model: "m", tier: .ram, pin: true),
        .preload(model: "m", tier: .nvme, pin: false),
        .pin(model: "m"), .unpin(model: "m"), .evict(model: "m", tier: .ram), .stats,
    ]

    static let responses: [Response] = [
        .ok(""), .ok("pinned m"),
        .helloOK(HelloOK(version: 1, server: "weightcache 0.1.0", maxRequestFrame: 65536, maxReadLength: 8 << 20, maxInFlight: 32, blockSize: 4 << 20)),
        .model(ModelInfo(model: "m@main", snapshot: "/s/x", pinned: true, files: [file, FileInfo(path: "b", size: 0, digest: "", nvme: .absent, ramBytes: 0)])),
        .model(ModelInfo(model: "m@main", snapshot: "", pinned: false, files: [])),
        .file(file), .opened(file),
        .models([ModelSummary(model: "a@b", files: 3, bytes: 10, nvmeBytes: 5, ramBytes: 1, pinned: true)]), .models([]),
        .data([]), .data(Array(0...255)),
        .progress(done: 0, total: .max), .stats(json: "{\"ram\":{}}"),
        .error(.notFound, "no such model"), .error(ErrorCode(rawValue: 999), "future"),
    ]

    @Test func requestsRoundTrip() throws {
        for (index, request) in Self.requests.enumerated() {
            let bytes = request.frame(request: UInt32(index)).encoded
            let frames = try Self.byteByByte(bytes)
            #expect(frames.count == 1)
            #expect(frames.first?.request == UInt32(index))
            #expect(try Request(decoding: frames[0]) == request)
        }
    }

    @Test func responsesRoundTrip() throws {
        for (index, response) in Self.responses.enumerated() {
            let frame = response.frame(request: UInt32(index) + 1000)
            let frames = try Self.byteByByte(frame.encoded)
            #expect(frames == [frame])
            #expect(try Response(decoding: frames[0]) == response)
        }
    }

    /// The hello frame of docs/protocol.md's example, byte for byte.
    @Test func helloMatchesTheSpecification() {
        let bytes = Request.hello(Hello(client: "")).frame(request: 1).encoded
        let expected: [UInt8] = [0x1b, 0, 0, 0, 0x01, 0, 0, 0, 0x01, 0, 0, 0, 0x0b, 0] + Array("weightcache".utf8) + [1, 0, 1, 0, 0, 0]
        #expect(bytes == expected)
    }

    @Test func malformedPayloadsAreRejected() {
        // Missing bytes, bytes left over, invalid UTF-8, a bool of 2, a tier of 3.
        let cases: [(UInt16, [UInt8])] = [
            (0x02, [5, 0, 0x61]),
            (0x04, [0]),
            (0x02, [2, 0, 0xC3, 0x28]),
            (0x07, [1, 0, 0x61, 1, 2]),
            (0x0A, [1, 0, 0x61, 3]),
        ]
        for (type, payload) in cases {
            #expect(throws: WireError.self) { try Request(decoding: Frame(type: type, request: 1, payload: payload)) }
        }
        #expect(throws: WireError.unknownType(0x7E, request: 9)) { try Request(decoding: Frame(type: 0x7E, request: 9, payload: [])) }
        #expect(throws: WireError.unknownType(0x80, request: 9)) { try Request(decoding: Frame(type: 0x80, request: 9, payload: [])) }
        // A list claiming more items than bytes remain is refused before any allocation.
        #expect(throws: WireError.self) { try Response(decoding: Frame(type: 0x84, request: 1, payload: [0xFF, 0xFF, 0xFF, 0xFF])) }
    }

    @Test func decoderRejectsBadHeaders() {
        var tooShort = FrameDecoder(maxFrameSize: 1024)
        tooShort.append([3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
        #expect(throws: WireError.self) { try tooShort.next() }

        var reserved = FrameDecoder(maxFrameSize: 1024)
        reserved.append([8, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0])
        #expect(throws: WireError.self) { try reserved.next() }

        // A huge length is refused from the header alone, before its payload.
        var huge = FrameDecoder(maxFrameSize: 1024)
        huge.append([0xFF, 0xFF, 0xFF, 0x7F, 1, 0, 0, 0, 0, 0, 0, 0])
        #expect(throws: WireError.frameTooLarge(length: 0x7FFF_FFFF + 4, limit: 1024)) { try huge.next() }
    }

    @Test func pipelinedFramesComeOutInOrder() throws {
        var decoder = FrameDecoder(maxFrameSize: 1 << 20)
        var stream: [UInt8] = []
        for (i, request) in Self.requests.enumerated() { stream += request.frame(request: UInt32(i)).encoded }
        decoder.append(stream)
        var decoded: [Request] = []
        while let frame = try decoder.next() { decoded.append(try Request(decoding: frame)) }
        #expect(decoded == Self.requests)
        #expect(decoder.buffered == 0)
    }

    static func byteByByte(_ bytes: [UInt8]) throws -> [Frame] {
        var decoder = FrameDecoder(maxFrameSize: 1 << 20)
        var frames: [Frame] = []
        for byte in bytes {
            decoder.append([byte])
            while let frame = try decoder.next() { frames.append(frame) }
        }
        return frames
    }
}

/// The counters' operation names: the case names, spelled without reflection.
@Test func messageNamesAreTheCaseNames() {
    for type in MessageType.allCases {
        #expect(type.name == "\(type)")
    }
}
