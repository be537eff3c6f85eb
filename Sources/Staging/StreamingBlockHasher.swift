import Integrity
import ObjectStore
import Synchronization

/// The xxh3-64 of each block of a partial, computed from the bytes as the
/// download writes them (`WriteObserver`), while they are still in the CPU
/// cache: verifying a landed part then needs no read back from the file.
/// (Reading every part back cost a fifth of a pull's CPU, measured with perf.)
///
/// A block is hashed only if its bytes arrive front to back, which is what
/// one ranged GET does; a retry starts again at the block's first byte and so
/// starts its hash again. Anything else (a write that skips or repeats bytes)
/// leaves the block without a streamed digest, and the caller hashes it from
/// the file instead: the streamed digest is an optimisation, never trusted
/// for a block it did not see whole.
final class StreamingBlockHasher: WriteObserver, Sendable {
    private struct Block {
        var hasher = Hasher64()
        /// Bytes of the block hashed so far, in order.
        var next = 0
    }
    private struct State {
        var open: [Int: Block] = [:]
        var done: [Int: UInt64] = [:]
    }

    let blockSize: Int
    let size: UInt64
    private let state = Mutex(State())

    init(blockSize: Int, size: UInt64) {
        self.blockSize = blockSize
        self.size = size
    }

    func wrote(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) {
        var position = 0
        while position < bytes.count {
            let absolute = offset + UInt64(position)
            let block = Int(absolute / UInt64(blockSize))
            let within = Int(absolute % UInt64(blockSize))
            let length = Int(min(UInt64(blockSize), size - UInt64(block) * UInt64(blockSize)))
            let count = min(bytes.count - position, length - within)
            let piece = UnsafeRawBufferPointer(rebasing: bytes[position..<position + count])
            feed(block: block, at: within, piece, blockLength: length)
            position += count
        }
    }

    private func feed(block: Int, at within: Int, _ piece: UnsafeRawBufferPointer, blockLength: Int) {
        // Take the block's hasher out of the table: only this block's single
        // stream feeds it, so the hashing itself runs outside the lock.
        let taken: Block? = state.withLock { state in
            if within == 0 {
                state.done[block] = nil
                var fresh = state.open.removeValue(forKey: block) ?? Block()
                fresh.hasher.reset()
                fresh.next = 0
                return fresh
            }
            guard let open = state.open.removeValue(forKey: block), open.next == within else { return nil }
            return open
        }
        guard var current = taken else { return }  // out of order: no streamed digest for this block
        current.hasher.update(piece)
        current.next += piece.count
        let finished = current.next == blockLength ? current.hasher.finalize() : nil
        state.withLock { state in
            if let finished { state.done[block] = finished } else { state.open[block] = current }
        }
    }

    /// The digest of `block` if its bytes were all seen in order since it was
    /// last started; removes it (a block is verified once per landing).
    func take(_ block: Int) -> UInt64? {
        state.withLock { $0.done.removeValue(forKey: block) }
    }
}
