// Wire: the socket protocol's messages and framing, pure (no sockets, no
// Foundation I/O), so it can be round-trip tested and fuzzed on its own.
// docs/protocol.md is the specification; this module is its reference codec.
//
// Integers are little-endian; strings are a u16 length and UTF-8; lists a
// u32 count. `ByteReader` never traps on bad input: every read checks its
// bounds and throws `WireError.malformed`, which is what lets the daemon meet
// garbage with an error reply instead of a crash.

/// Appends protocol primitives to a byte buffer.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func u8(_ value: UInt8) { bytes.append(value) }
    public mutating func u16(_ value: UInt16) { integer(value) }
    public mutating func u32(_ value: UInt32) { integer(value) }
    public mutating func u64(_ value: UInt64) { integer(value) }
    public mutating func bool(_ value: Bool) { bytes.append(value ? 1 : 0) }

    /// Strings longer than 65,535 bytes cannot be encoded; callers validate
    /// lengths before (names and paths are far shorter), and this truncates
    /// at a character boundary rather than trap.
    public mutating func string(_ value: String) {
        var utf8 = Array(value.utf8)
        if utf8.count > Int(UInt16.max) {
            var cut = Int(UInt16.max)
            while cut > 0 && utf8[cut] & 0xC0 == 0x80 { cut -= 1 }
            utf8 = Array(utf8[..<cut])
        }
        u16(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    public mutating func list<T>(_ items: [T], _ item: (inout ByteWriter, T) -> Void) {
        u32(UInt32(items.count))
        for value in items { item(&self, value) }
    }

    public mutating func raw<C: Collection>(_ data: C) where C.Element == UInt8 { bytes.append(contentsOf: data) }

    private mutating func integer<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

/// Reads protocol primitives from a payload, checking every bound.
public struct ByteReader {
    private let bytes: ArraySlice<UInt8>
    private var position: Int

    public init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        position = bytes.startIndex
    }

    public var remaining: Int { bytes.endIndex - position }

    public mutating func u8() throws(WireError) -> UInt8 {
        try need(1)
        defer { position += 1 }
        return bytes[position]
    }

    public mutating func u16() throws(WireError) -> UInt16 { try integer() }
    public mutating func u32() throws(WireError) -> UInt32 { try integer() }
    public mutating func u64() throws(WireError) -> UInt64 { try integer() }

    public mutating func bool() throws(WireError) -> Bool {
        switch try u8() {
        case 0: return false
        case 1: return true
        case let other: throw .malformed("a bool is 0 or 1, got \(other)")
        }
    }

    public mutating func string() throws(WireError) -> String {
        let count = Int(try u16())
        try need(count)
        let slice = bytes[position..<position + count]
        position += count
        guard let text = String(validating: slice, as: UTF8.self) else { throw .malformed("a string is not valid UTF-8") }
        return text
    }

    /// A list whose count cannot claim more items than there are bytes left
    /// (each item takes at least `minimumItemSize`), so a hostile count
    /// cannot make the reader reserve or loop over billions of items.
    public mutating func list<T>(minimumItemSize: Int, _ item: (inout ByteReader) throws(WireError) -> T) throws(WireError) -> [T] {
        let count = Int(try u32())
        guard count <= remaining / max(1, minimumItemSize) else {
            throw .malformed("a list claims \(count) items but \(remaining) bytes remain")
        }
        var items: [T] = []
        items.reserveCapacity(count)
        for _ in 0..<count { items.append(try item(&self)) }
        return items
    }

    /// Everything left.
    public mutating func rest() -> ArraySlice<UInt8> {
        defer { position = bytes.endIndex }
        return bytes[position...]
    }

    /// Payloads are exact: bytes left over are as malformed as bytes missing.
    public func finish() throws(WireError) {
        guard remaining == 0 else { throw .malformed("\(remaining) unexpected byte(s) after the payload") }
    }

    private func need(_ count: Int) throws(WireError) {
        guard remaining >= count else { throw .malformed("payload ends early: needed \(count) byte(s), \(remaining) left") }
    }

    private mutating func integer<T: FixedWidthInteger>() throws(WireError) -> T {
        let size = MemoryLayout<T>.size
        try need(size)
        var value: T = 0
        for i in 0..<size { value |= T(bytes[position + i]) << (8 * i) }
        position += size
        return value
    }
}
