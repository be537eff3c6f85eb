import BlockCache
import Foundation
import Integrity

#if canImport(Glibc)
import Glibc
#endif

// The warm set: which blocks were in RAM, written to staging on drain and
// every minute, and loaded back from NVMe in the background at the next
// start, so that a restarted daemon (an upgrade, a crash) serves its hot
// models from RAM again without waiting for clients to fault them in one
// miss at a time. Only staged blobs are listed (that is where the blocks are
// reloaded from, verified like any miss); a restore stops when the cache has
// no unpinned room or the daemon drains.

struct WarmSetFile: Codable {
    struct Blob: Codable {
        var digest: String
        var blocks: [Int]
    }
    var version = 1
    var blobs: [Blob]
}

extension Node {
    var warmSetPath: String { staging.layout.root + "/warm-set.json" }

    /// Writes the blocks resident now (of staged blobs), atomically.
    public func saveWarmSet() {
        var byBlob: [String: [Int]] = [:]
        for key in cache.residentBlocks() { byBlob[key.blob, default: []].append(key.block) }
        let blobs = byBlob.keys.sorted().compactMap { digest -> WarmSetFile.Blob? in
            guard Digest128(hex: digest) != nil, staging.state(ofBlob: digest) == .staged else { return nil }
            return WarmSetFile.Blob(digest: digest, blocks: byBlob[digest]!.sorted())
        }
        guard let data = try? JSONEncoder().encode(WarmSetFile(blobs: blobs)) else { return }
        let temporary = warmSetPath + ".tmp"
        if FileManager.default.createFile(atPath: temporary, contents: data), rename(temporary, warmSetPath) == 0 {
            logger.debug("warm set saved: \(blobs.reduce(0) { $0 + $1.blocks.count }) block(s) of \(blobs.count) blob(s)")
        } else {
            unlink(temporary)
            logger.warning("could not write the warm set to \(warmSetPath)")
        }
    }

    /// Loads the saved warm set back into RAM on a thread of its own, then,
    /// until the daemon drains, saves the warm set every `interval` and
    /// settles blobs pulled unsynced every `settleInterval` (see `Durability`:
    /// the kernel has usually written them back by then, so the fsync is cheap).
    public func restoreWarmSetAndKeepSaving(every interval: Duration = .seconds(60), settleInterval: Duration = .seconds(15)) {
        Thread { [self] in
            restoreWarmSet()
            var sinceSave: Duration = .zero
            var sinceSettle: Duration = .zero
            while !lock.withLock({ draining }) {
                Thread.sleep(forTimeInterval: 0.5)
                sinceSave += .milliseconds(500)
                sinceSettle += .milliseconds(500)
                if lock.withLock({ draining }) { break }
                if sinceSettle >= settleInterval {
                    settleStaging()
                    sinceSettle = .zero
                }
                if sinceSave >= interval {
                    saveWarmSet()
                    sinceSave = .zero
                }
            }
        }.start()
    }

    /// fsyncs blobs pulled under `deferred` durability and clears their markers.
    public func settleStaging() {
        do { try staging.settle(logger: logger) } catch {
            logger.warning("could not settle staged blobs: \(error)")
        }
    }

    private func restoreWarmSet() {
        guard let data = FileManager.default.contents(atPath: warmSetPath),
            let file = try? JSONDecoder().decode(WarmSetFile.self, from: data)
        else { return }
        var loaded = 0
        outer: for blob in file.blobs {
            guard Digest128(hex: blob.digest) != nil, let staged = try? staging.stagedBlob(blob.digest) else { continue }
            let source = BlobSource(
                digest: blob.digest, path: staged.path, size: staged.size, blockSize: staged.digests.blockSize,
                blockDigests: staged.digests.digests)
            guard source.blockSize == cache.blockSize else { continue }
            for block in blob.blocks where block >= 0 && block < source.blockDigests.count {
                if lock.withLock({ draining }) { break outer }
                do { try cache.warm(source, block: block) } catch {
                    if case .full = error { break outer }
                    continue  // a block that fails its check is quarantined by the cache's owner
                }
                loaded += 1
            }
        }
        logger.info("warm set restored: \(loaded) block(s) loaded into RAM from NVMe")
    }
}
