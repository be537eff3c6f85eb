// swift-tools-version:6.0
import PackageDescription

// The coverage-guided fuzz target of the socket protocol's decoder, a package
// of its own (like Benchmarks/Micro) so that `swift test` never builds it:
// it needs `-sanitize=fuzzer`. Run it with Fuzz/run.sh.
let package = Package(
    name: "Fuzz",
    dependencies: [.package(name: "main", path: "..")],
    targets: [
        .executableTarget(
            name: "WireFuzz",
            dependencies: [.product(name: "Wire", package: "main")])
    ]
)
