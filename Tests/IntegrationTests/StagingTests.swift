// The staging tier against the real S3 server: push, pull, verify, resume.
import Foundation
import BlockCache
import Integrity
import Logging
import Models
import ObjectStore
import Staging
import TestSupport
import XCTest

final class StagingTests: XCTestCase {
    let logger = Logger(label: "test")
    var directory = ""

    override func setUpWithError() throws {
        directory = try temporaryDirectory()
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A fresh bucket as a models root (under a prefix, as in production).
    func makeRepository(_ tag: String) async throws -> ModelRepository {
        let client = try S3Client(settings: sharedServer.settings(), logger: logger)
        let bucket = uniqueBucketName(tag)
        try await client.createBucket(bucket)
        return ModelRepository(store: client.bucket(bucket), prefix: "models")
    }

    func makeStaging(partSize: UInt64 = 8 << 20) -> Staging {
        Staging(
            directory: directory + "/staging", downloader: ParallelDownloader(partSize: partSize, concurrency: 4),
            logger: logger)
    }

    /// A real safetensors model made by scripts/make-test-model.py.
    func makeModel(bigMiB: Int = 110, shards: Int = 3) throws -> String {
        let path = directory + "/model"
        try runProcess("/usr/bin/env", ["python3", repositoryRoot + "/scripts/make-test-model.py", path, "--big-mib", String(bigMiB), "--shards", String(shards)])
        return path
    }

    func blobNames() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: directory + "/staging/blobs")) ?? []
    }

    func testPushThenPullIsByteIdenticalAndLoadsWithSafetensors() async throws {
        let model = try makeModel()
        let repository = try await makeRepository("push")
        let reference = try ModelReference(parsing: "org/tiny-llm@v1")
        let manifest = try await repository.push(directory: model, as: reference)
        XCTAssertEqual(manifest.files.map(\.path), [
            "config.json", "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
            "model-00003-of-00003.safetensors", "tokenizer/vocab.txt",
        ])
        XCTAssertGreaterThan(manifest.files[1].size, 100 << 20)

        let staging = makeStaging()
        let resolved = try await repository.resolve(reference)
        XCTAssertTrue(resolved.published)
        let report = try await staging.pull(resolved, from: repository)
        XCTAssertEqual(report.downloaded, manifest.files.reduce(0) { $0 + $1.size })
        XCTAssertEqual(try staging.path(of: reference), report.snapshot)
        for file in manifest.files {
            let staged = report.snapshot + "/" + file.path
            XCTAssertEqual(try Digest128.ofFile(atPath: staged), try Digest128.ofFile(atPath: model + "/" + file.path), file.path)
            let link = try FileManager.default.destinationOfSymbolicLink(atPath: staged)
            XCTAssertFalse(link.hasPrefix("/"), "snapshot links must be relative: \(link)")
        }
        // The real safetensors library reads every tensor from the snapshot.
        let check = """
            import sys, numpy as np
            from safetensors.numpy import load_file
            src, dst = sys.argv[1], sys.argv[2]
            n = 0
            for i in range(1, 4):
                name = f"model-{i:05d}-of-00003.safetensors"
                a, b = load_file(f"{src}/{name}"), load_file(f"{dst}/{name}")
                assert a.keys() == b.keys(), name
                for k in a:
                    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and np.array_equal(a[k], b[k]), k
                    n += 1
            print(f"tensors equal: {n}")
            """
        let output = try runProcess("/usr/bin/env", ["python3", "-c", check, model, report.snapshot])
        XCTAssertTrue(output.contains("tensors equal: 10"), output)

        // A second pull finds everything staged and downloads nothing.
        let again = try await staging.pull(resolved, from: repository)
        XCTAssertEqual(again.downloaded, 0)
        XCTAssertEqual(again.alreadyStaged, manifest.files.count)
    }

    func testModelWithoutManifestPullsAndIsHashed() async throws {
        let model = try makeModel(bigMiB: 20, shards: 2)
        let repository = try await makeRepository("plain")
        let reference = try ModelReference(parsing: "plain@main")
        // Uploaded by "another tool": plain objects, no manifest.
        for name in try FileManager.default.subpathsOfDirectory(atPath: model).sorted()
        where !name.hasSuffix("tokenizer") {
            try await repository.store.upload("models/plain/main/" + name, fromFile: model + "/" + name, progress: nil)
        }
        let resolved = try await repository.resolve(reference)
        XCTAssertFalse(resolved.published)
        XCTAssertEqual(resolved.manifest.files.count, 4)
        let report = try await makeStaging().pull(resolved, from: repository)
        for file in resolved.manifest.files {
            let digest = try Digest128.ofFile(atPath: model + "/" + file.path)
            XCTAssertEqual(try Digest128.ofFile(atPath: report.snapshot + "/" + file.path), digest)
            XCTAssertTrue(blobNames().contains(digest.description), "blob named by its content digest")
        }
    }

    /// staging.writes=direct (the default): the pull's bytes go to disk with
    /// O_DIRECT and leave the page cache to readers; "buffered" fills it.
    /// The same bytes either way, checked by the pull and compared here.
    func testDirectWritesKeepThePulledModelOutOfThePageCache() async throws {
        let probe = open(directory + "/odirect-probe", O_RDWR | O_CREAT | DirectWriter.oDirect, 0o644)
        guard probe >= 0 else { throw XCTSkip("\(directory): this filesystem refuses O_DIRECT") }
        close(probe)
        let model = try makeModel(bigMiB: 48, shards: 1)
        let repository = try await makeRepository("direct")
        let reference = try ModelReference(parsing: "org/direct@v1")
        let manifest = try await repository.push(directory: model, as: reference)
        let resolved = try await repository.resolve(reference)
        let shard = try XCTUnwrap(manifest.files.first { $0.path.hasSuffix(".safetensors") })
        var fractions: [Bool: Double] = [:]
        for direct in [true, false] {
            let staging = Staging(
                directory: directory + "/staging-\(direct)", downloader: ParallelDownloader(partSize: 8 << 20, concurrency: 4),
                directWrites: direct, logger: logger)
            let report = try await staging.pull(resolved, from: repository)
            let staged = report.snapshot + "/" + shard.path
            fractions[direct] = try Residency.fraction(ofFile: staged)
            XCTAssertEqual(try Digest128.ofFile(atPath: staged), try Digest128.ofFile(atPath: model + "/" + shard.path))
        }
        XCTAssertLessThan(fractions[true]!, 0.05, "direct writes left the shard in the page cache")
        XCTAssertGreaterThan(fractions[false]!, 0.5, "buffered writes should fill the page cache (else this test proves nothing)")
    }

    func testFlippedByteFailsNamingFileAndBlockAndStagesNothing() async throws {
        let model = try makeModel(bigMiB: 30, shards: 1)
        let repository = try await makeRepository("flip")
        let reference = try ModelReference(parsing: "flip@main")
        let manifest = try await repository.push(directory: model, as: reference)
        let shard = try XCTUnwrap(manifest.files.first { $0.path.hasSuffix(".safetensors") })

        // Replace the stored object by one with one byte flipped in block 5.
        let offset = 5 * manifest.blockSize + 1234
        var bytes = try Array(Data(contentsOf: URL(fileURLWithPath: model + "/" + shard.path)))
        bytes[offset] ^= 0x01
        try await repository.store.put(repository.key(of: shard, in: reference), bytes: bytes)

        let resolved = try await repository.resolve(reference)
        do {
            _ = try await makeStaging().pull(resolved, from: repository)
            XCTFail("a corrupt object was staged")
        } catch {
            guard case .integrity(let m, let file, let block, _, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(m, "flip@main")
            XCTAssertEqual(file, shard.path)
            XCTAssertEqual(block, 5)
            XCTAssertTrue(error.description.contains(shard.path) && error.description.contains("block 5"), error.description)
        }
        XCTAssertFalse(blobNames().contains(shard.xxh3_128!), "the corrupt file appeared under blobs/")
        XCTAssertThrowsError(try makeStaging().path(of: reference), "a snapshot was published")
    }

    func testLZ4CompressedModelRoundTripsAndCorruptFramesAreCaught() async throws {
        let model = try makeModel(bigMiB: 40, shards: 2)
        let repository = try await makeRepository("lz4")
        let reference = try ModelReference(parsing: "packed@main")
        let manifest = try await repository.push(directory: model, as: reference, compress: true)
        let shard = try XCTUnwrap(manifest.files.first { $0.path == "model-00001-of-00002.safetensors" })
        XCTAssertEqual(shard.encoding, .lz4)
        XCTAssertEqual(shard.object, shard.path + ".lz4")
        let stored = try await repository.store.head(repository.key(of: shard, in: reference)).size
        XCTAssertEqual(stored, shard.storedSize)

        // Small parts: several frames per GET and several GETs per file.
        let staging = makeStaging(partSize: 8 << 20)
        let report = try await staging.pull(try await repository.resolve(reference), from: repository)
        XCTAssertEqual(report.downloaded, manifest.files.reduce(0) { $0 + $1.storedSize })
        for file in manifest.files {
            XCTAssertEqual(
                try Digest128.ofFile(atPath: report.snapshot + "/" + file.path),
                try Digest128.ofFile(atPath: model + "/" + file.path), file.path)
        }

        // One byte flipped inside frame 3 of the stored object: the pull names block 3.
        var bytes = try await repository.store.get(repository.key(of: shard, in: reference))
        let frameStart = shard.frames![0..<3].reduce(0, +)
        bytes[Int(frameStart + shard.frames![3] / 2)] ^= 0x55
        try await repository.store.put(repository.key(of: shard, in: reference), bytes: bytes)
        let fresh = Staging(
            directory: directory + "/staging-2", downloader: ParallelDownloader(partSize: 8 << 20, concurrency: 4),
            logger: logger)
        let resolved = try await repository.resolve(reference)
        do {
            _ = try await fresh.pull(resolved, from: repository)
            XCTFail("a corrupt lz4 frame was staged")
        } catch {
            guard case .integrity(_, let file, let block, _, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(file, shard.path)
            XCTAssertEqual(block, 3)
        }
        let blobs = (try? FileManager.default.contentsOfDirectory(atPath: directory + "/staging-2/blobs")) ?? []
        XCTAssertFalse(blobs.contains(shard.xxh3_128!))
    }

    func testCheckQuarantinesCorruptBlobsAndAPullRepairs() async throws {
        let model = try makeModel(bigMiB: 12, shards: 1)
        let repository = try await makeRepository("check")
        let reference = try ModelReference(parsing: "check@main")
        let manifest = try await repository.push(directory: model, as: reference)
        let staging = makeStaging()
        let resolved = try await repository.resolve(reference)
        _ = try await staging.pull(resolved, from: repository)

        // Rot on disk: one byte of one blob changes; plus leftovers of a crash.
        let shard = try XCTUnwrap(manifest.files.first { $0.path.hasSuffix(".safetensors") })
        let blob = staging.layout.blob(shard.xxh3_128!)
        chmod(blob, 0o644)
        let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: blob))
        try handle.seek(toOffset: 4096)
        let byte = try XCTUnwrap(handle.readData(ofLength: 1).first)
        try handle.seek(toOffset: 4096)
        handle.write(Data([byte ^ 0x80]))
        try handle.close()
        FileManager.default.createFile(atPath: staging.layout.partials + "/orphan.partial", contents: Data([1]))
        // A snapshot folder left by a process that died an hour ago goes; one a live pull is writing stays.
        let dead = staging.layout.root + "/models/check/@snapshots/.tmp-dead"
        try FileManager.default.createDirectory(atPath: dead, withIntermediateDirectories: true)
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-3600)], ofItemAtPath: dead)
        let live = staging.layout.root + "/models/check/@snapshots/.tmp-live"
        try FileManager.default.createDirectory(atPath: live, withIntermediateDirectories: true)

        let report = try staging.check(logger: logger)
        XCTAssertEqual(report.blobsVerified, manifest.files.count)
        XCTAssertEqual(report.quarantined.count, 1)
        XCTAssertTrue(report.quarantined[0].contains("/quarantine/\(shard.xxh3_128!)."), "\(report.quarantined)")
        XCTAssertEqual(report.removed.count, 2, "\(report.removed)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: live), "a snapshot being written was removed")
        XCTAssertFalse(blobNames().contains(shard.xxh3_128!), "a corrupt blob is still served")
        XCTAssertThrowsError(try staging.path(of: reference), "a snapshot with a quarantined blob is not whole")

        // The next pull fetches just that file again; the model is whole and right.
        let repaired = try await staging.pull(resolved, from: repository)
        XCTAssertEqual(repaired.downloaded, shard.size)
        XCTAssertEqual(try staging.path(of: reference), repaired.snapshot)
        XCTAssertEqual(
            try Digest128.ofFile(atPath: repaired.snapshot + "/" + shard.path).description, shard.xxh3_128)
        XCTAssertEqual(try staging.check(logger: logger).quarantined, [])
    }

    /// The RAM tier on top of staging: blocks read back through the cache
    /// match, and a blob that rots on NVMe is caught on read and quarantined.
    func testBlockCacheReadsStagedBlobsAndQuarantinesRot() async throws {
        let model = try makeModel(bigMiB: 20, shards: 1)
        let repository = try await makeRepository("ram")
        let reference = try ModelReference(parsing: "ram@main")
        let manifest = try await repository.push(directory: model, as: reference)
        let staging = makeStaging()
        _ = try await staging.pull(try await repository.resolve(reference), from: repository)
        let quarantined = QuarantineLog()
        let logger = self.logger
        // No read-ahead: a background prefetch could load the block before it is damaged.
        let cache = try BlockCache(budgetBytes: 8 << 20, blockSize: manifest.blockSize, policy: .s3fifo, readAheadBlocks: 0) { blob, block in
            quarantined.add(try? staging.quarantine(blob: blob, reason: "block \(block) failed its check", logger: logger))
        }
        func source(_ file: Manifest.File) throws -> BlobSource {
            let staged = try staging.stagedBlob(file.xxh3_128!)
            return BlobSource(
                digest: file.xxh3_128!, path: staged.path, size: staged.size, blockSize: staged.digests.blockSize,
                blockDigests: staged.digests.digests)
        }
        for file in manifest.files {
            let bytes = try cache.read(try source(file), range: 0..<file.size)
            XCTAssertEqual(Digest128.of(bytes).description, file.xxh3_128, file.path)
        }
        XCTAssertLessThanOrEqual(cache.statistics.residentBytes, 8 << 20)

        let shard = try XCTUnwrap(manifest.files.first { $0.path.hasSuffix(".safetensors") })
        let blob = try source(shard)
        guard case .file(let blobPath) = blob.origin else { return XCTFail("a staged blob's origin is its file") }
        cache.drop(blob: blob.digest)  // the damaged block must come from NVMe
        chmod(blobPath, 0o644)
        let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: blobPath))
        try handle.seek(toOffset: UInt64(4 * manifest.blockSize + 99))
        handle.write(Data([0xAB]))
        try handle.close()
        XCTAssertThrowsError(try cache.read(blob, range: UInt64(4 * manifest.blockSize)..<UInt64(4 * manifest.blockSize + 10))) {
            guard case .integrity(_, 4, _, _) = $0 as? CacheError else { return XCTFail("\($0)") }
        }
        XCTAssertEqual(quarantined.count, 1)
        XCTAssertFalse(blobNames().contains(shard.xxh3_128!), "the rotten blob is still in blobs/")
    }

    func testConcurrentPullsDownloadEachBlobOnce() async throws {
        let model = try makeModel(bigMiB: 40, shards: 2)
        let repository = try await makeRepository("twice")
        let reference = try ModelReference(parsing: "twice@main")
        let manifest = try await repository.push(directory: model, as: reference)
        let counting = CountingStore(repository.store)
        let counted = ModelRepository(store: counting, prefix: repository.prefix)
        let resolved = try await counted.resolve(reference)
        let staging = makeStaging()
        async let first = staging.pull(resolved, from: counted)
        async let second = staging.pull(resolved, from: counted)
        let (a, b) = try await (first, second)
        XCTAssertEqual(a.snapshot, b.snapshot)
        let total = manifest.files.reduce(0) { $0 + $1.size }
        XCTAssertEqual(counting.downloadedBytes, total, "each blob must be downloaded exactly once")
        XCTAssertEqual(a.downloaded + b.downloaded, total)
        // Lock files live only while held or awaited: none are left behind.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: staging.layout.locks), [])
        _ = try staging.check(logger: logger)
        _ = try staging.evict(reference)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: staging.layout.locks), [])
    }

    func testManifestsThatLieOrEscapeAreRejected() async throws {
        let repository = try await makeRepository("lies")
        try await repository.store.put("models/evil/main/w.bin", bytes: Array(repeating: 1, count: 1000))
        let reference = try ModelReference(parsing: "evil@main")
        for path in ["../../escape.bin", "/etc/cron.d/x", "a/../../b"] {
            let manifest = """
                {"format": 1, "model": "evil", "revision": "main", "blockSize": 4194304, "files": [
                 {"path": "\(path)", "object": "w.bin", "size": 1000, "encoding": "raw",
                  "xxh3_128": "\(Digest128.of(Array(repeating: 1, count: 1000)))",
                  "blocks": ["\(hex16(xxh3_64(Array(repeating: 1, count: 1000))))"]}]}
                """
            try await repository.store.put("models/evil/main/" + Manifest.objectName, bytes: Array(manifest.utf8))
            do {
                _ = try await repository.resolve(reference)
                XCTFail("\(path) was accepted")
            } catch {
                guard case .invalidManifest(let model, let file, _) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(model, "evil@main")
                XCTAssertEqual(file, path)
            }
        }
        var honest = Manifest(model: reference, files: [
            Manifest.File(path: "w.bin", object: "w.bin", size: 2000, xxh3_128: String(repeating: "0", count: 32),
                          blocks: [String(repeating: "0", count: 16)]),
        ])
        /// Publishes `manifest` and pulls it: the error the pull fails with.
        func failure(of manifest: Manifest, _ what: String) async throws -> StagingError? {
            try await repository.store.put("models/evil/main/" + Manifest.objectName, bytes: manifest.encoded())
            let resolved = try await repository.resolve(reference)
            do {
                _ = try await makeStaging().pull(resolved, from: repository)
                XCTFail("\(what) was accepted")
                return nil
            } catch {
                return error
            }
        }
        // A size that disagrees with the store: caught before a byte is staged.
        if let error = try await failure(of: honest, "a lying size") {
            guard case .sizeMismatch(_, let file, let claimed, let actual) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(file, "w.bin")
            XCTAssertEqual(claimed, 2000)
            XCTAssertEqual(actual, 1000)
        }
        // Right size, wrong digests: the block check catches it.
        honest.files[0].size = 1000
        if let error = try await failure(of: honest, "wrong digests") {
            guard case .integrity(_, "w.bin", 0, _, _) = error else { return XCTFail("\(error)") }
        }
        // Right block digests, wrong whole-file digest: the manifest contradicts
        // itself, and the whole-file check catches what no block check can.
        honest.files[0].blocks = [hex16(xxh3_64(Array(repeating: 1, count: 1000)))]
        if let error = try await failure(of: honest, "a whole-file digest that does not match") {
            guard case .integrity(_, "w.bin", nil, let expected, let actual) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(expected, String(repeating: "0", count: 32))
            XCTAssertEqual(actual, Digest128.of(Array(repeating: 1, count: 1000)).description)
        }
        XCTAssertEqual(blobNames(), [])
    }
}

/// An ObjectStore that forwards to another and counts the bytes downloaded.
final class CountingStore: ObjectStore, @unchecked Sendable {
    let inner: any ObjectStore
    private let lock = NSLock()
    private var bytes: UInt64 = 0

    init(_ inner: any ObjectStore) { self.inner = inner }

    var downloadedBytes: UInt64 { lock.withLock { bytes } }
    var name: String { inner.name }

    func head(_ key: String) async throws(ObjectStoreError) -> ObjectInfo { try await inner.head(key) }
    func get(_ key: String, range: Range<UInt64>?) async throws(ObjectStoreError) -> [UInt8] {
        try await inner.get(key, range: range)
    }
    func download(
        _ key: String, range: Range<UInt64>, into file: OutputFile, at offset: UInt64, ifMatch etag: String?,
        progress: ProgressHandler?
    ) async throws(ObjectStoreError) {
        try await inner.download(key, range: range, into: file, at: offset, ifMatch: etag, progress: progress)
        lock.withLock { bytes += UInt64(range.count) }
    }
    func list(prefix: String) async throws(ObjectStoreError) -> [ObjectInfo] { try await inner.list(prefix: prefix) }
    func put(_ key: String, bytes: [UInt8]) async throws(ObjectStoreError) { try await inner.put(key, bytes: bytes) }
    func upload(_ key: String, fromFile path: String, progress: ProgressHandler?) async throws(ObjectStoreError) {
        try await inner.upload(key, fromFile: path, progress: progress)
    }
    func delete(_ key: String) async throws(ObjectStoreError) { try await inner.delete(key) }
}

final class QuarantineLog: @unchecked Sendable {
    private let lock = NSLock()
    private var paths: [String] = []
    func add(_ path: String?) { lock.withLock { if let path { paths.append(path) } } }
    var count: Int { lock.withLock { paths.count } }
}

/// The safetensors-aware prefetch order, on a file written by the real library.
final class SafetensorsIndexTests: XCTestCase {
    func testFollowsTensorOrderOfARealFile() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Names sort differently from file order: the index must follow offsets.
        let script = """
            import numpy as np, sys
            from safetensors.numpy import save_file
            tensors = {name: np.full((64, 64), i, dtype=np.float32) for i, name in enumerate(["z.last", "a.first", "m.middle", "b.second"])}
            save_file(tensors, sys.argv[1])
            from safetensors import safe_open
            with safe_open(sys.argv[1], "np") as f:
                print(" ".join(f.keys()))
            """
        let path = directory + "/model.safetensors"
        _ = try runProcess("/usr/bin/env", ["python3", "-c", script, path])
        let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
        let index = try SafetensorsIndex(header: bytes, fileSize: UInt64(bytes.count))
        XCTAssertEqual(index.tensors.count, 4)
        // What the library wrote, in offset order, checked against the bytes themselves.
        for tensor in index.tensors {
            let value = bytes[Int(tensor.range.lowerBound)..<Int(tensor.range.lowerBound) + 4].withUnsafeBytes { $0.load(as: Float.self) }
            let expected = ["z.last": 0, "a.first": 1, "m.middle": 2, "b.second": 3][tensor.name]!
            XCTAssertEqual(value, Float(expected), tensor.name)
            XCTAssertEqual(tensor.range.count, 64 * 64 * 4)
        }
        let order = index.tensors.map(\.name)
        let first = try XCTUnwrap(index.tensors.first)
        XCTAssertEqual(index.following(first.range.lowerBound + 10, count: 2), index.tensors[1...2].map(\.range))
        XCTAssertEqual(index.following(index.tensors.last!.range.lowerBound, count: 2), [])
        XCTAssertEqual(index.tensor(at: 3), nil, "the header holds no tensor")
        XCTAssertEqual(Set(order), ["z.last", "a.first", "m.middle", "b.second"])
        XCTAssertThrowsError(try SafetensorsIndex(header: [1, 0, 0, 0, 0, 0, 0, 0, 0x7B], fileSize: 9))
        XCTAssertThrowsError(try SafetensorsIndex(header: Array(bytes.prefix(20)), fileSize: UInt64(bytes.count)))
    }

    /// In the cache: reading the start of tensor k loads the blocks of the
    /// tensors after k in offset order (not name order, not the blocks before),
    /// on a real file with tensors spread over many 64 KiB blocks.
    func testCacheReadAheadFollowsTensorOrder() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Twelve 256 KiB tensors (4 blocks each) whose names sort against file order.
        let script = """
            import numpy as np, sys
            from safetensors.numpy import save_file
            save_file({f"t{11 - i:02d}": np.full((256, 256), i, dtype=np.float32) for i in range(12)}, sys.argv[1])
            """
        let path = directory + "/model.safetensors"
        _ = try runProcess("/usr/bin/env", ["python3", "-c", script, path])
        let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: path)))
        let blockSize = 64 << 10
        let index = try SafetensorsIndex(header: bytes, fileSize: UInt64(bytes.count))
        let digests = stride(from: 0, to: bytes.count, by: blockSize).map { xxh3_64(Array(bytes[$0..<min(bytes.count, $0 + blockSize)])) }
        let source = BlobSource(
            digest: "st", origin: .file(path: path), size: UInt64(bytes.count), blockSize: blockSize,
            blockDigests: digests, tensors: index)
        // Read-ahead of 8 blocks: 4 blocks (256 KiB) of following tensors per move.
        let cache = try BlockCache(budgetBytes: UInt64(64 * blockSize), blockSize: blockSize, policy: .lru, readAheadBlocks: 8)
        func blocks(of tensor: Int) -> ClosedRange<Int> {
            let range = index.tensors[tensor].range
            return Int(range.lowerBound) / blockSize...Int(range.upperBound - 1) / blockSize
        }
        // A loader jumps straight to tensor 6 (a random jump: block read-ahead stays quiet).
        let start = index.tensors[6].range.lowerBound
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16, alignment: 8)
        defer { buffer.deallocate() }
        try cache.read(source, range: start..<start + 16, into: buffer, reader: 7)
        XCTAssertEqual(Array(buffer), Array(bytes[Int(start)..<Int(start) + 16]))
        let next = blocks(of: 7)
        let deadline = Date().addingTimeInterval(5)
        while !next.allSatisfy({ cache.isResident(blob: "st", block: $0) }) && Date() < deadline { usleep(10_000) }
        for block in next { XCTAssertTrue(cache.isResident(blob: "st", block: block), "block \(block) of tensor 7 was not read ahead") }
        for block in blocks(of: 5) where !blocks(of: 6).contains(block) {
            XCTAssertFalse(cache.isResident(blob: "st", block: block), "block \(block) of tensor 5 (before the one read) was loaded")
        }
        for block in blocks(of: 10) where !next.contains(block) && !blocks(of: 6).contains(block) {
            XCTAssertFalse(cache.isResident(blob: "st", block: block), "read-ahead went past its budget (tensor 10)")
        }
    }
}
