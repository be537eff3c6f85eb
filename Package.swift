// swift-tools-version:6.0
import PackageDescription

// One manifest, one toolchain. The C libraries are Debian's -dev packages,
// found through pkg-config; each is imported by exactly one Swift module.
let package = Package(
    name: "weightcache",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "weightcache", targets: ["weightcache"]),
        .library(name: "ObjectStore", targets: ["ObjectStore"]),
        // For Benchmarks/Micro (a package of its own).
        .library(name: "BlockCache", targets: ["BlockCache"]),
        .library(name: "Integrity", targets: ["Integrity"]),
        // For Fuzz/ (libFuzzer over the frame decoder).
        .library(name: "Wire", targets: ["Wire"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
    ],
    targets: [
        // C libraries (system-library targets: module maps + pkg-config).
        .systemLibrary(
            name: "CCurl", pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(
            name: "CLZ4", pkgConfig: "liblz4",
            providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(
            name: "CXXHash", pkgConfig: "libxxhash",
            providers: [.apt(["libxxhash-dev"])]),

        // Linux file calls Swift's Glibc module cannot see (sync_file_range, O_DIRECT).
        .target(name: "CFileSystem"),

        // Unix-socket calls Swift cannot express (SCM_RIGHTS, SO_PEERCRED).
        .target(name: "CSocket"),

        // Configuration: config.json, environment and flags, validated.
        .target(name: "Config"),
        // Integrity: xxh3-64 / xxh3-128 digests (libxxhash).
        .target(name: "Integrity", dependencies: ["CXXHash"]),
        // Object stores: the protocol, S3 over libcurl, file://, parallel transfers.
        .target(
            name: "ObjectStore",
            dependencies: [
                "CCurl", "CFileSystem",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // lz4 frames (liblz4).
        .target(name: "Compression", dependencies: ["CLZ4"]),
        // Published models: references, manifests, push, resolution.
        .target(name: "Models", dependencies: ["Compression", "Integrity", "ObjectStore"]),
        // The NVMe tier: verified blobs, snapshots, resumable pulls.
        .target(
            name: "Staging",
            dependencies: [
                "CFileSystem", "Compression", "Integrity", "Models", "ObjectStore",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The RAM tier: arena, eviction policies, verified block reads.
        .target(name: "BlockCache", dependencies: ["Integrity", "CFileSystem"]),
        // The socket protocol: messages and framing, pure.
        .target(name: "Wire"),
        // Local stream sockets: listen, accept, fd passing, peer credentials.
        .target(name: "UnixSocket", dependencies: ["CSocket"]),
        // The daemon: the node (staging + cache + store), the socket server, access control.
        .target(
            name: "Daemon",
            dependencies: [
                "BlockCache", "Compression", "Config", "Integrity", "Models", "ObjectStore", "Staging", "UnixSocket", "Wire",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        // The Swift client of the socket API (the CLI uses it).
        .target(name: "WeightCacheClient", dependencies: ["UnixSocket", "Wire"]),
        // The one executable.
        .executableTarget(
            name: "weightcache",
            dependencies: [
                "BlockCache", "Compression", "Config", "Daemon", "Integrity", "Models", "ObjectStore", "Staging", "UnixSocket", "WeightCacheClient", "Wire",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),

        // Benchmarks/TraceReplay: eviction policies and prefetch on synthetic traces.
        .executableTarget(name: "trace-replay", dependencies: ["BlockCache"], path: "Benchmarks/TraceReplay"),
        // Benchmarks/BlockSize: the RAM tier's block size, sequential throughput vs miss cost.
        .executableTarget(name: "block-size", dependencies: ["BlockCache", "Integrity"], path: "Benchmarks/BlockSize"),
        // Benchmarks/SocketBench: the socket API vs pread and mmap (Benchmarks/socket-api.sh).
        .executableTarget(name: "socket-bench", dependencies: ["UnixSocket", "WeightCacheClient"], path: "Benchmarks/SocketBench"),
        // Benchmarks/HostileBench: a good client's latency while others attack (Benchmarks/hostile-clients.sh).
        .executableTarget(
            name: "hostile-bench", dependencies: ["UnixSocket", "WeightCacheClient", "Wire"], path: "Benchmarks/HostileBench"),

        .testTarget(name: "ConfigTests", dependencies: ["Config"]),
        .testTarget(name: "IntegrityTests", dependencies: ["Integrity"]),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "Compression"]),
        // Test helpers more than one test target uses.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "BlockCacheTests", dependencies: ["BlockCache", "Integrity", "TestSupport"]),
        .testTarget(name: "WireTests", dependencies: ["Wire"]),
        .testTarget(
            name: "ObjectStoreTests",
            dependencies: ["ObjectStore", .product(name: "Logging", package: "swift-log")]),
        // Against a real SeaweedFS S3 server (scripts/s3-server.sh) and the real binary.
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "BlockCache", "ObjectStore", "Integrity", "Config", "Models", "Staging", "UnixSocket", "WeightCacheClient", "Wire",
                "TestSupport",
            ]),
    ]
)
