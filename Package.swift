// swift-tools-version: 6.1
import PackageDescription

// The per-packet modules skip run-time exclusivity checks in release builds: the engine
// and the slow path keep their hot state in class properties, and each access would
// otherwise pay a check (about a fifth of the fast path). Debug builds, and so the tests,
// keep the checks.
let perPacket: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "Offload",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "OffloadCore", targets: ["OffloadCore"]),
        .library(name: "OffloadWire", targets: ["OffloadWire"]),
        .library(name: "OffloadLink", targets: ["OffloadLink"]),
        .library(name: "OffloadSim", targets: ["OffloadSim"]),
        .library(name: "OffloadEngine", targets: ["OffloadEngine"]),
        .library(name: "OffloadHost", targets: ["OffloadHost"]),
        .library(name: "OffloadTCP", targets: ["OffloadTCP"]),
        .executable(name: "offload", targets: ["offload"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .target(name: "COffloadShim"),
        // The fast path as lean C: `offload bench` measures it next to the engine's.
        .target(name: "CFastPathReference"),
        .target(name: "OffloadCore", dependencies: ["COffloadShim"]),
        .target(name: "OffloadWire", dependencies: ["OffloadCore"]),
        .target(name: "OffloadLink", dependencies: ["OffloadCore", "OffloadWire", "COffloadShim"], swiftSettings: perPacket),
        .target(name: "OffloadSim", dependencies: ["OffloadCore"]),
        // TCP's pieces without I/O: sequence space, RTT/RTO, reassembly, the SACK scoreboard.
        .target(name: "OffloadTCP", dependencies: ["OffloadCore", "OffloadWire"], swiftSettings: perPacket),
        .target(name: "OffloadEngine", dependencies: ["OffloadCore", "OffloadWire", "OffloadLink", "OffloadTCP", "COffloadShim"],
                swiftSettings: perPacket),
        .target(name: "OffloadHost", dependencies: ["COffloadShim", "OffloadCore", "OffloadWire", "OffloadLink", "OffloadEngine", "OffloadTCP"],
                swiftSettings: perPacket),
        // `offload demo`: two hosts and a gateway in one simulation, with its checks and report.
        .target(name: "OffloadDemo", dependencies: ["OffloadHost", "OffloadEngine", "OffloadLink", "OffloadSim", "OffloadTCP"]),
        .executableTarget(
            name: "offload",
            dependencies: [
                "OffloadHost", "OffloadLink", "OffloadEngine", "OffloadDemo", "COffloadShim", "CFastPathReference",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        // Namespaces, shell commands with time limits, the root check: shared by the tests that touch Linux.
        .target(name: "OffloadTestSupport", path: "Tests/OffloadTestSupport"),
        .testTarget(name: "OffloadCoreTests", dependencies: ["OffloadCore", "COffloadShim"]),
        .testTarget(name: "OffloadWireTests", dependencies: ["OffloadWire"], resources: [.copy("Fixtures")]),
        .testTarget(name: "OffloadLinkTests", dependencies: ["OffloadLink", "OffloadSim", "OffloadTestSupport"]),
        .testTarget(name: "OffloadEngineTests", dependencies: ["OffloadEngine", "OffloadWire", "OffloadSim"]),
        .testTarget(name: "OffloadSimTests", dependencies: ["OffloadSim"]),
        .testTarget(name: "OffloadTCPTests", dependencies: ["OffloadTCP", "OffloadCore", "OffloadWire"]),
        .testTarget(name: "OffloadHostTests", dependencies: ["OffloadHost", "OffloadSim", "OffloadEngine"]),
        // Runs the `offload` binary too (it depends on the command, so `swift test` builds it).
        .testTarget(name: "OffloadDemoTests", dependencies: ["OffloadDemo", "OffloadEngine", "OffloadTestSupport", "offload"]),
        // Depends on the command too, so that `swift test` builds the binary its tests run.
        .testTarget(name: "InteropTests", dependencies: ["OffloadHost", "OffloadLink", "OffloadTestSupport", "offload"]),
    ],
    swiftLanguageModes: [.v6]
)
