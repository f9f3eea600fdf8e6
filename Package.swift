// swift-tools-version: 6.1
import PackageDescription

/// Targets are listed bottom-up: each may depend only on targets above it (see docs/DESIGN.md).
let package = Package(
  name: "RaftDB",
  platforms: [.macOS(.v15)],
  products: [
    .library(name: "Raft", targets: ["Raft"]),
    .library(name: "RaftSimulation", targets: ["RaftSimulation"]),
    .executable(name: "raft-sim", targets: ["raft-sim"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2")
  ],
  targets: [
    // The consensus algorithm as a pure, deterministic state machine. Imports nothing.
    .target(name: "Raft"),
    // Seeded cluster simulator, fault models and invariant checkers.
    .target(name: "RaftSimulation", dependencies: ["Raft"]),
    .executableTarget(
      name: "raft-sim",
      dependencies: ["RaftSimulation", .product(name: "ArgumentParser", package: "swift-argument-parser")]),

    // Throughput of the core alone (no I/O); see BENCHMARKS.md.
    .executableTarget(name: "raft-core-bench", dependencies: ["Raft"], path: "Sources/raft-core-bench"),

    .testTarget(name: "RaftTests", dependencies: ["Raft"]),
    .testTarget(name: "RaftSimulationTests", dependencies: ["RaftSimulation", "Raft"]),
  ],
  swiftLanguageModes: [.v6]
)
