// Integrity: the digests weightcache names and checks data by.
//
// xxh3-128 names a whole blob (content addressing); xxh3-64 checks each block
// as it arrives and again when it is read back. Both come from libxxhash's
// `_dispatch` entry points, which pick AVX2 at run time: hashing must stay far
// cheaper than the network and the disk (7-16 GB/s measured here) so that
// verifying everything costs little.
import CXXHash

/// A 128-bit xxh3 digest. Printed as 32 lowercase hex digits, high half first
/// (the order of `XXH128_canonicalFromHash`, which `xxh128sum` prints too).
public struct Digest128: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Parses 32 hex digits; nil for anything else.
    public init?(hex: some StringProtocol) {
        guard hex.count == 32, let high = UInt64(hex.prefix(16), radix: 16),
            let low = UInt64(hex.suffix(16), radix: 16)
        else { return nil }
        self.init(high: high, low: low)
    }

    public var description: String { hex16(high) + hex16(low) }

    /// The digest of `bytes` in one call.
    public static func of(_ bytes: UnsafeRawBufferPointer) -> Digest128 {
        let h = XXH3_128bits_dispatch(bytes.baseAddress, bytes.count)
        return Digest128(high: h.high64, low: h.low64)
    }

    public static func of(_ bytes: [UInt8]) -> Digest128 {
        bytes.withUnsafeBytes { of($0) }
    }
}

/// xxh3-64 of `bytes`, the per-block check.
public func xxh3_64(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
    XXH3_64bits_dispatch(bytes.baseAddress, bytes.count)
}

public func xxh3_64(_ bytes: [UInt8]) -> UInt64 {
    bytes.withUnsafeBytes { xxh3_64($0) }
}

/// Sixteen lowercase hex digits, zero-padded.
public func hex16(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 16 - digits.count) + digits
}

/// A streaming xxh3-128 over data fed in order. Not thread-safe: one owner.
public struct Hasher128: ~Copyable {
    private let state: OpaquePointer

    public init() {
        state = XXH3_createState()!
        XXH3_128bits_reset(state)
    }

    deinit { XXH3_freeState(state) }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        _ = XXH3_128bits_update_dispatch(state, bytes.baseAddress, bytes.count)
    }

    public func finalize() -> Digest128 {
        let h = XXH3_128bits_digest(state)
        return Digest128(high: h.high64, low: h.low64)
    }
}

/// A streaming xxh3-64 (the per-block check) over data fed in order, for
/// hashing a block as its bytes arrive. Not thread-safe: one owner at a time.
public final class Hasher64: @unchecked Sendable {
    private let state: OpaquePointer

    public init() {
        state = XXH3_createState()!
        XXH3_64bits_reset(state)
    }

    deinit { XXH3_freeState(state) }

    public func reset() { XXH3_64bits_reset(state) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        _ = XXH3_64bits_update_dispatch(state, bytes.baseAddress, bytes.count)
    }

    public func finalize() -> UInt64 { XXH3_64bits_digest(state) }
}
