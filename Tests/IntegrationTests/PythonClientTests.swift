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
}
