// swift-tools-version:6.1
import PackageDescription

// Micro-benchmarks (ordo-one/benchmark), kept out of the main package so that
// `swift test` never builds them.   cd Benchmarks/Micro && swift package benchmark
let package = Package(
    name: "weightcache-micro",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: "../.."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "BlockCacheMicro",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                // "main": a path dependency is named after its folder (this checkout's); rename if yours differs.
                .product(name: "BlockCache", package: "main"),
                .product(name: "Integrity", package: "main"),
            ],
            path: "Benchmarks/BlockCacheMicro",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")])
    ]
)
