/// One frame: a 12-byte header (u32 length of what follows it, u16 type,
/// u16 reserved = 0, u32 request id) and a payload.
public struct Frame: Equatable, Sendable {
    public static let headerSize = 12
    /// The header's `length` counts type, reserved and request id too.
    static let lengthCovered = 8

    public var type: UInt16
    public var request: UInt32
    public var payload: [UInt8]

    public init(type: UInt16, request: UInt32, payload: [UInt8]) {
        self.type = type
        self.request = request
        self.payload = payload
    }

    /// The frame as it goes on the wire.
    public var encoded: [UInt8] {
        var bytes = Frame.header(type: type, request: request, payloadLength: payload.count)
        bytes.append(contentsOf: payload)
        return bytes
    }

    /// A parsed header: what follows it.
    public struct Header: Equatable, Sendable {
        public var type: UInt16
        public var request: UInt32
        public var payloadLength: Int
    }

    /// Parses and checks the 12 header bytes at the start of `bytes`;
    /// `maxFrameSize` bounds the whole frame, header included.
    public static func header(parsing bytes: ArraySlice<UInt8>, maxFrameSize: Int) throws(WireError) -> Header {
        var reader = ByteReader(bytes.prefix(headerSize))
        let length = Int(try reader.u32())
        let type = try reader.u16()
        let reserved = try reader.u16()
        let request = try reader.u32()
        guard length >= lengthCovered else {
            throw .malformed("frame length \(length) is below the minimum of \(lengthCovered)")
        }
        guard reserved == 0 else { throw .malformed("reserved header field is \(reserved), must be 0") }
        guard length + 4 <= maxFrameSize else { throw .frameTooLarge(length: length + 4, limit: maxFrameSize) }
        return Header(type: type, request: request, payloadLength: length - lengthCovered)
    }

    /// Just the header, for senders that write a large payload (read data)
    /// straight from where it lies instead of copying it behind the header.
    public static func header(type: UInt16, request: UInt32, payloadLength: Int) -> [UInt8] {
        var writer = ByteWriter(capacity: headerSize + 32)
        writer.u32(UInt32(payloadLength + lengthCovered))
        writer.u16(type)
        writer.u16(0)
        writer.u32(request)
        return writer.bytes
    }
}

/// Cuts a byte stream into frames. Feed it what `recv` returned; take frames
/// out with `next()` until it returns nil. A header announcing a frame over
/// `maxFrameSize` (header included) is rejected as soon as the header is in,
/// before any of its payload is buffered, so a hostile length costs nothing.
public struct FrameDecoder: Sendable {
    public let maxFrameSize: Int
    private var buffer: [UInt8] = []
    private var start = 0

    public init(maxFrameSize: Int) {
        self.maxFrameSize = maxFrameSize
    }

    /// Bytes received and not yet returned as frames.
    public var buffered: Int { buffer.count - start }

    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        compact()
        buffer.append(contentsOf: bytes)
    }

    /// The same for raw bytes: not generic, so a caller in another module
    /// does not go through an unspecialized, element-by-element append (seen
    /// in perf on every request the daemon read).
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        compact()
        buffer.append(contentsOf: bytes)
    }

    private mutating func compact() {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
    }

    /// The next complete frame, or nil until more bytes arrive.
    public mutating func next() throws(WireError) -> Frame? {
        guard buffered >= Frame.headerSize else { return nil }
        let header = try Frame.header(parsing: buffer[start..<start + Frame.headerSize], maxFrameSize: maxFrameSize)
        let total = Frame.headerSize + header.payloadLength
        guard buffered >= total else { return nil }
        let payload = Array(buffer[start + Frame.headerSize..<start + total])
        start += total
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 20)
            start = 0
        }
        return Frame(type: header.type, request: header.request, payload: payload)
    }
}
