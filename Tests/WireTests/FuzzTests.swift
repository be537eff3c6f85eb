import Testing
import Wire

/// The decoder meets garbage: random frames and mutations of valid ones,
/// 200,000 in all. Each must decode or throw `WireError`: never trap, never
/// hang, never return a frame bigger than the limit. A seeded generator
/// makes a failure reproducible.
@Suite struct FuzzTests {
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static let seeds: [[UInt8]] =
        CodecTests.requests.map { $0.frame(request: 7).encoded } + CodecTests.responses.map { $0.frame(request: 7).encoded }

    @Test func randomAndMutatedFrames() {
        var rng = SplitMix(state: 0x5EED)
        var decoded = 0
        var rejected = 0
        for round in 0..<200_000 {
            var bytes: [UInt8]
            if round % 4 == 0 {
                // Random bytes behind a plausible header half of the time.
                let count = Int.random(in: 0...64, using: &rng)
                bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if round % 8 == 0 && count >= 12 {
                    let length = UInt32(count - 4)
                    bytes.replaceSubrange(0..<4, with: withUnsafeBytes(of: length.littleEndian, Array.init))
                    bytes[6] = 0
                    bytes[7] = 0
                }
            } else {
                bytes = Self.seeds[Int.random(in: 0..<Self.seeds.count, using: &rng)]
                for _ in 0..<Int.random(in: 1...4, using: &rng) {
                    switch Int.random(in: 0..<4, using: &rng) {
                    case 0 where !bytes.isEmpty: bytes[Int.random(in: 0..<bytes.count, using: &rng)] ^= UInt8.random(in: 1...255, using: &rng)
                    case 1 where !bytes.isEmpty: bytes.removeLast(Int.random(in: 1...min(8, bytes.count), using: &rng))
                    case 2: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0...bytes.count, using: &rng))
                    default: if bytes.count > 12 { bytes[Int.random(in: 12..<bytes.count, using: &rng)] = 0xFF }
                    }
                }
            }
            var decoder = FrameDecoder(maxFrameSize: 4096)
            decoder.append(bytes)
            do {
                while let frame = try decoder.next() {
                    #expect(frame.payload.count + Frame.headerSize <= 4096)
                    if (try? Request(decoding: frame)) != nil || (try? Response(decoding: frame)) != nil {
                        decoded += 1
                    } else {
                        rejected += 1
                    }
                }
            } catch {
                rejected += 1
            }
        }
        // Both outcomes occur: the mutations are neither all harmless nor all fatal.
        #expect(decoded > 1000)
        #expect(rejected > 1000)
    }
}
