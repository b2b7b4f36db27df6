// swift-tools-version:6.1
import PackageDescription

/// PSAD-Swift. Module layout and dependency direction: see DESIGN.md
/// (Tensor <- Vision <- Models <- Anomaly <- Stages <- Worker; Shared is
/// data and protocol only).
let package = Package(
    name: "psad-swift",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "psad-coordinator", targets: ["Coordinator"]),
        .executable(name: "psad-worker", targets: ["Worker"]),
        .executable(name: "psad-bench", targets: ["Bench"]),
        .library(name: "Tensor", targets: ["Tensor"]),
        .library(name: "Vision", targets: ["Vision"]),
        .library(name: "Models", targets: ["Models"]),
        .library(name: "Anomaly", targets: ["Anomaly"]),
        .library(name: "Stages", targets: ["Stages"]),
        .library(name: "Shared", targets: ["Shared"]),
        .library(name: "Scheduler", targets: ["Scheduler"]),
        .library(name: "Report", targets: ["Report"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // System libraries. Each is a module map plus a shim header and
        // carries no API of its own: only the Swift layer above uses them.
        .systemLibrary(
            name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        // A plain module map: libzmq's pkg-config file adds flags SwiftPM rejects.
        .systemLibrary(
            name: "CZeroMQ", path: "Sources/CZeroMQ",
            providers: [.apt(["libzmq3-dev"])]),
        // glibc's mallopt (Compute.retainFreedMemory).
        .systemLibrary(name: "CMalloc", path: "Sources/CMalloc"),
        // SQLite's process-wide configuration (sqlite3_config is variadic): the same libsqlite3 GRDB links.
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        // Owns every libpng call, so libpng's longjmp never crosses a Swift frame.
        .target(
            name: "CPNG", path: "Sources/CPNG",
            linkerSettings: [.linkedLibrary("png")]),

        // Whole-or-nothing file writes (temporary file + rename), for every module that writes files.
        .target(name: "AtomicWrite"),
        .target(name: "Tensor", dependencies: ["AtomicWrite", "COpenBLAS", .target(name: "CMalloc", condition: .when(platforms: [.linux]))]),
        .target(name: "Vision", dependencies: ["AtomicWrite", "Tensor", "CPNG"]),
        .target(name: "Models", dependencies: ["Tensor"]),
        .target(name: "Anomaly", dependencies: ["Tensor"]),
        .target(name: "Stages", dependencies: ["AtomicWrite", "Tensor", "Vision", "Models", "Anomaly", "Shared"]),
        .target(name: "Shared", dependencies: ["AtomicWrite", "CZeroMQ", .product(name: "Crypto", package: "swift-crypto"),
                                              .product(name: "Logging", package: "swift-log"), "Yams"]),
        // The coordinator's state: the SQLite DAG, leases, attempts, results.
        .target(name: "Scheduler", dependencies: ["Shared", "CSQLite", .product(name: "GRDB", package: "GRDB.swift"),
                                                 .product(name: "Logging", package: "swift-log")]),
        // A sweep's HTML report (and CSV/JSON) from the database and the artifacts the stages wrote.
        .target(name: "Report", dependencies: ["AtomicWrite", "Scheduler", "Shared", "Vision"]),
        .executableTarget(
            name: "Coordinator",
            dependencies: [
                "Shared", "Scheduler", "Report", "Tensor", "Vision", "Stages",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "Worker",
            dependencies: [
                "AtomicWrite", "Shared", "Tensor", "Models", "Anomaly", "Stages", "Vision",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "Bench",
            dependencies: [
                "Tensor", "Models", "Anomaly", "Shared", "Scheduler", "Stages",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        .target(name: "TestSupport", dependencies: ["Tensor"], path: "Tests/TestSupport"),
        .testTarget(name: "TensorTests", dependencies: ["AtomicWrite", "Tensor", "TestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "VisionTests", dependencies: ["Vision", "TestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "Vision", "TestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "AnomalyTests", dependencies: ["Anomaly", "TestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "StagesTests", dependencies: ["Stages", "Shared", "Anomaly", "Models", "TestSupport"]),
        .testTarget(name: "SharedTests", dependencies: ["Shared", "TestSupport", .product(name: "Crypto", package: "swift-crypto")]),
        // Starts the built psad-coordinator and psad-worker binaries.
        .testTarget(name: "EndToEndTests", dependencies: ["TestSupport", "Vision", "Shared", "Stages", "Scheduler", .target(name: "Coordinator"), .target(name: "Worker"),
                                                         .product(name: "ArgumentParser", package: "swift-argument-parser"), "Yams"]),
        .testTarget(name: "SchedulerTests", dependencies: ["Scheduler", "Shared", "TestSupport"]),
        .testTarget(name: "ReportTests", dependencies: ["Report", "Scheduler", "Shared", "Vision", "TestSupport"]),
    ]
)
