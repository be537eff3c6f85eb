import XCTest

@testable import Models

final class ModelReferenceTests: XCTestCase {
    func testParsing() throws {
        let plain = try ModelReference(parsing: "llama-3-8b")
        XCTAssertEqual(plain.name, "llama-3-8b")
        XCTAssertEqual(plain.revision, "main")
        let nested = try ModelReference(parsing: "meta/llama_3.1@v2")
        XCTAssertEqual(nested.name, "meta/llama_3.1")
        XCTAssertEqual(nested.revision, "v2")
        XCTAssertEqual(nested.folder, "meta/llama_3.1/v2/")
    }

    func testPathTricksAreRefused() {
        for text in ["", "../x", "a/../b", "/abs", "a//b", "a/", "x@", "x@../y", "x@a/b", "sp ace", "a@b@c", ".", "a/./b", "nul\0"] {
            XCTAssertThrowsError(try ModelReference(parsing: text), String(reflecting: text)) { error in
                guard case .invalidReference = error as? ModelError else { return XCTFail("\(error)") }
            }
        }
    }
}

final class ManifestTests: XCTestCase {
    let model = try! ModelReference(parsing: "org/model@main")

    func manifest(_ files: [Manifest.File], blockSize: Int = 1 << 20) -> Manifest {
        Manifest(model: model, blockSize: blockSize, files: files)
    }

    func file(_ path: String, size: UInt64 = 3 << 20, blocks: Int = 3) -> Manifest.File {
        Manifest.File(
            path: path, object: path, size: size, xxh3_128: String(repeating: "a", count: 32),
            blocks: Array(repeating: String(repeating: "b", count: 16), count: blocks))
    }

    func expectInvalid(_ manifest: Manifest, file: String?, mentioning word: String, line: UInt = #line) {
        XCTAssertThrowsError(try manifest.validate(for: model), line: line) { error in
            guard case .invalidManifest(let m, let f, let reason) = error as? ModelError else {
                return XCTFail("\(error)", line: line)
            }
            XCTAssertEqual(m, "org/model@main", line: line)
            XCTAssertEqual(f, file, line: line)
            XCTAssertTrue(reason.contains(word), "\(reason)", line: line)
        }
    }

    func testValidManifestRoundTrips() throws {
        let original = manifest([file("model.safetensors"), file("sub/config.json", size: 10, blocks: 1)])
        XCTAssertNoThrow(try original.validate(for: model))
        var decoded = try Manifest.decode(original.encoded(), for: model)
        XCTAssertEqual(decoded.checksum, original.computedChecksum(), "encoded() seals the manifest")
        decoded.checksum = nil
        XCTAssertEqual(decoded, original)
    }

    /// A manifest changed after it was sealed (a flipped digest that is still
    /// valid hex, say) is refused; one without a checksum (older) is accepted.
    func testChecksumCatchesCorruptionThatStillParses() throws {
        let original = manifest([file("model.safetensors")])
        let text = String(decoding: original.encoded(), as: UTF8.self)
        let tampered = text.replacingOccurrences(of: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", with: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab")
        XCTAssertNotEqual(text, tampered)
        XCTAssertThrowsError(try Manifest.decode(Array(tampered.utf8), for: model)) { error in
            guard case .invalidManifest(_, _, let reason) = error as? ModelError else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("checksum mismatch"), reason)
        }
        let unsealed = try JSONEncoder().encode(original)  // no checksum field at all
        XCTAssertNoThrow(try Manifest.decode(Array(unsealed), for: model))
    }

    func testEscapingPathsAreRejected() {
        for path in ["../etc/passwd", "/etc/passwd", "a/../../b", "a\0b", "", "a//b", "./a", "a\\..\\b"] {
            expectInvalid(manifest([file(path)]), file: path, mentioning: "path")
        }
        var sneaky = file("ok.bin")
        sneaky.object = "../other-model/weights.bin"
        expectInvalid(manifest([sneaky]), file: "ok.bin", mentioning: "object key")
    }

    func testLyingSizesAndBadDigestsAreRejected() {
        expectInvalid(manifest([file("w.bin", size: 5 << 20, blocks: 3)]), file: "w.bin", mentioning: "needs 5 blocks")
        expectInvalid(manifest([file("w.bin", size: 0, blocks: 1)]), file: "w.bin", mentioning: "needs 0 blocks")
        var bad = file("w.bin")
        bad.xxh3_128 = "xyz"
        expectInvalid(manifest([bad]), file: "w.bin", mentioning: "32 hex")
        bad = file("w.bin")
        bad.blocks![1] = "ZZZZZZZZZZZZZZZZ"
        expectInvalid(manifest([bad]), file: "w.bin", mentioning: "block 1")
    }

    func testStructuralRules() {
        expectInvalid(manifest([file("a"), file("a")]), file: "a", mentioning: "twice")
        expectInvalid(manifest([file("a"), file("a/b")]), file: "a", mentioning: "both a file and the folder")
        expectInvalid(manifest([file("a")], blockSize: 3000), file: nil, mentioning: "blockSize")
        var other = manifest([file("a")])
        other.revision = "v9"
        expectInvalid(other, file: nil, mentioning: "describes")
        XCTAssertThrowsError(try Manifest.decode(Array("{\"format\": 1}".utf8), for: model))
        XCTAssertThrowsError(try Manifest.decode(Array("garbage".utf8), for: model))
    }
}
