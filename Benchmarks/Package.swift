// swift-tools-version: 6.1
// Micro-benchmarks, a package of their own so that building and testing Offload does not
// build the benchmark framework. Run from this folder: `swift package benchmark`.
import Foundation
import PackageDescription

// A path dependency is named after its folder, which is wherever the clone was made.
let offload = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "OffloadBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "CoreBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "OffloadCore", package: offload),
                .product(name: "OffloadWire", package: offload),
                .product(name: "OffloadEngine", package: offload),
                .product(name: "OffloadLink", package: offload),
            ],
            path: "Benchmarks/CoreBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
