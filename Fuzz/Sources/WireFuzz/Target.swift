// libFuzzer entry point: every input is fed to the frame decoder (limit
// 64 KiB, as the daemon's default) byte-slice by byte-slice, and every frame
// that comes out to both message decoders. Anything but a decoded message or
// a WireError — a trap, an overflow, an endless loop — is a finding.
import Wire

func fuzz(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let bytes = start.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? []
    var decoder = FrameDecoder(maxFrameSize: 64 << 10)
    // Split the input at a point it chooses itself, as recv would.
    let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
    for part in [bytes[..<cut], bytes[cut...]] {
        decoder.append(part)
        do {
            while let frame = try decoder.next() {
                precondition(frame.payload.count + Frame.headerSize <= 64 << 10)
                if let request = try? Request(decoding: frame) {
                    // A request that decodes encodes back to the same frame.
                    precondition(try! Request(decoding: request.frame(request: frame.request)) == request)
                }
                _ = try? Response(decoding: frame)
            }
        } catch {
            return 0
        }
    }
    return 0
}
