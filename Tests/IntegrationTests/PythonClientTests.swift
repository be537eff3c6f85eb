// The Python client's pytest suite (clients/python/tests) against a live
// daemon: a model preloaded and read through `read` and `open` + safetensors,
// and a cold model read before anyone preloads it.
import Foundation
import XCTest

final class PythonClientTests: XCTestCase {
    func testPytestSuiteAgainstALiveDaemon() async throws {
        let daemon = try await DaemonHarness(tag: "python")
        let main = try daemon.pushModel("py/tiny@main", bigMiB: 12, shards: 2, seed: 21)
        let cold = try daemon.pushModel("py/cold@main", bigMiB: 12, shards: 1, seed: 22)
        try daemon.start()
        let run = runProcessStatus(
            "/usr/bin/env",
            ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", repositoryRoot + "/clients/python/tests"],
            environment: [
                "PYTHONPATH": repositoryRoot + "/clients/python", "WEIGHTCACHE_REQUIRE_LIVE": "1",
                "WEIGHTCACHE_SOCKET": daemon.socket,
                "WEIGHTCACHE_TEST_MODEL": "py/tiny@main", "WEIGHTCACHE_TEST_MODEL_DIR": main,
                "WEIGHTCACHE_TEST_COLD_MODEL": "py/cold@main", "WEIGHTCACHE_TEST_COLD_MODEL_DIR": cold,
            ])
        XCTAssertEqual(run.status, 0, run.output)
        XCTAssertFalse(run.output.contains("skipped"), "live tests were skipped:\n\(run.output)")
        XCTAssertEqual(daemon.stop(), 0)
    }

    /// The package installs with pip, offline, and imports from where it landed.
    func testPackageInstallsWithPip() throws {
        let target = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: target) }
        let copy = target + "/src"
        try FileManager.default.copyItem(atPath: repositoryRoot + "/clients/python", toPath: copy)  // pip writes build/ beside the sources
        try runProcess("/usr/bin/env", [
            "python3", "-m", "pip", "install", "-q", "--no-index", "--no-build-isolation", "--target", target + "/site", copy,
        ])
        let run = try runProcess(
            "/usr/bin/env", ["python3", "-c", "import weightcache, sys; print(weightcache.__file__); print(weightcache.Client.__name__)"],
            environment: ["PYTHONPATH": target + "/site"])
        XCTAssertTrue(run.contains(target + "/site/weightcache/__init__.py"), run)
        XCTAssertTrue(run.contains("Client"), run)
    }
}
