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
    .executable(name: "raftdb", targets: ["raftdb"]),
    .executable(name: "raftctl", targets: ["raftctl"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
    .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
    .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
    // No traits, as grpc-swift-protobuf asks: the default ones bring Foundation streams in, unused here.
    .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0", traits: []),
  ],
  targets: [
    // The consensus algorithm as a pure, deterministic state machine. Imports nothing.
    .target(name: "Raft"),
    // The one JSON parser (bounded in depth and values, linear in time) and writer of the package.
    // Imports nothing.
    .target(name: "JSON"),
    // What raftdb's clients and servers share: read levels and member addresses. Imports nothing.
    .target(name: "RaftDBAPI"),
    // etcd v3's gRPC messages and service stubs, generated from etcd 3.4's protos by
    // scripts/generate-etcd-protos.sh. Imports nothing of ours.
    .target(
      name: "EtcdAPI",
      dependencies: [
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
      ],
      path: "Sources/EtcdAPI"),
    // One Raft group's runtime (core, state machine, Ready loop, reads, snapshots), generic over its
    // clock, storage, network and state machine: the server and the simulator both run it.
    .target(name: "RaftGroup", dependencies: ["Raft"]),
    // Seeded cluster simulator, fault models and invariant checkers; it runs RaftGroup.
    .target(name: "RaftSimulation", dependencies: ["Raft", "RaftGroup"]),
    // Write-ahead log, hard state and snapshot files; in-memory twins for tests.
    .target(name: "RaftStorage", dependencies: ["Raft", .product(name: "Logging", package: "swift-log")]),
    .executableTarget(
      name: "raft-sim",
      dependencies: [
        "RaftSimulation", "RaftGroup", .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),

    // Throughput of the core alone (no I/O); see BENCHMARKS.md.
    .executableTarget(name: "raft-core-bench", dependencies: ["Raft"], path: "Sources/raft-core-bench"),

    // Peer-to-peer TCP on SwiftNIO: the frame codec, connections with reconnect, snapshot streaming.
    .target(
      name: "RaftTransport",
      dependencies: [
        "Raft", "RaftStorage",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ]),
    // HTTP client for the raftdb API: redirects, endpoint failover, retries, idempotency keys. Below the
    // server in the dependency order because the server's -join uses it.
    .target(
      name: "RaftDBClient",
      dependencies: [
        "JSON", "RaftDBAPI",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
      ]),
    // The replicated key-value state machine: commands, revisions, idempotency, snapshots.
    .target(
      name: "KVStore",
      dependencies: [
        "Raft", "RaftGroup", .product(name: "HashTreeCollections", package: "swift-collections"),
      ]),
    // Watchers over the multi-version store's history: matching, bounded buffers, replay, progress
    // and cancellation, as a pure value that the server's dispatcher and the simulator both drive.
    .target(name: "KVWatch", dependencies: ["KVStore"]),
    // The node runtime that drives Raft, the HTTP API and metrics.
    // The operations of raftdb (key-value commands, reads at each level, membership, status,
    // leadership transfer) with their validation, limits and typed errors, and no protocol in it:
    // the HTTP API and later the gRPC API are adapters over it.
    .target(
      name: "RaftDBService",
      dependencies: [
        "Raft", "KVStore", "KVWatch", "RaftDBAPI",
        .product(name: "NIOCore", package: "swift-nio"),
      ]),
    // etcd's v3 gRPC API: the services over RaftDBService, with etcd's errors (issue 15).
    .target(
      name: "EtcdGRPC",
      dependencies: [
        "EtcdAPI", "KVStore", "KVWatch", "RaftDBAPI", "RaftDBService",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ]),
    .target(
      name: "RaftDBServer",
      dependencies: [
        "Raft", "JSON", "RaftGroup", "RaftStorage", "RaftTransport", "KVStore", "KVWatch", "RaftDBAPI",
        "RaftDBService",
        "RaftDBClient",
        .product(name: "Metrics", package: "swift-metrics"),
        .product(name: "Prometheus", package: "swift-prometheus"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
      ]),
    // The server executable, with the course's command line.
    .executableTarget(
      name: "raftdb",
      dependencies: [
        "RaftDBServer", "RaftDBClient", "RaftDBAPI", "KVStore", "EtcdGRPC",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
      ]),
    // The client executable: key-value commands, membership, a local cluster.
    .executableTarget(
      name: "raftctl",
      dependencies: [
        "Raft", "JSON", "RaftDBAPI", "RaftDBClient", "RaftDBServer", "RaftDBVerify", "Linearizability",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Histogram", package: "hdrhistogram-swift"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
      ]),
    // Linearizability checking of per-key register histories (Wing & Gong with Lowe's memoization).
    .target(name: "Linearizability"),
    // Jepsen-style verification of a real cluster: processes, a fault proxy, a workload, the checker.
    .target(
      name: "RaftDBVerify",
      dependencies: [
        "Raft", "JSON", "RaftDBAPI", "RaftDBClient", "RaftDBServer", "RaftTransport", "Linearizability",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
      ]),
    // Storage benchmark (BENCHMARKS.md) and the child process the WAL crash test kills.
    .executableTarget(name: "raft-storage-bench", dependencies: ["RaftStorage"]),
    // Apply throughput and memory of the multi-version store beside the current state machine.
    .executableTarget(name: "kv-store-bench", dependencies: ["KVStore"]),
    .executableTarget(name: "wal-crash-writer", dependencies: ["RaftStorage"]),

    .testTarget(name: "RaftTests", dependencies: ["Raft"]),
    // The JSON parser (what it accepts, its bounds) and writer (its output beside JSONSerialization's).
    .testTarget(name: "JSONTests", dependencies: ["JSON"]),
    .testTarget(name: "RaftSimulationTests", dependencies: ["RaftSimulation", "RaftGroup", "Raft"]),
    .testTarget(
      name: "RaftTransportTests",
      dependencies: [
        "RaftTransport", "Raft", "RaftStorage",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ]),
    // The HTTP connection handler on an EmbeddedChannel, and a seeded fuzzer of its request path.
    .testTarget(
      name: "RaftDBServerTests",
      dependencies: [
        "RaftDBServer", "RaftDBService", "KVStore", "Raft", "RaftStorage",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
      ]),
    // Real raftdb processes on loopback (depends on the executable so that it is built first).
    .testTarget(
      name: "RaftDBIntegrationTests",
      dependencies: [
        "RaftDBClient", "RaftDBAPI", "RaftDBVerify", "raftdb", "Raft", "RaftTransport", "RaftDBServer",
        "RaftStorage", "EtcdAPI",
        .product(name: "GRPCCore", package: "grpc-swift-2"),
        .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
      ]),
    .testTarget(name: "LinearizabilityTests", dependencies: ["Linearizability", "Raft"]),
    .testTarget(name: "KVStoreTests", dependencies: ["KVStore", "Raft"]),
    // The watch hub against the store's history (order, atomic revisions, replay, bounds, resume),
    // and under the simulator's faults with a store and hub per simulated node.
    .testTarget(name: "KVWatchTests", dependencies: ["KVWatch", "KVStore", "RaftSimulation", "Raft"]),
    // The service's validation beside a replica's verdicts, with a backend over a real state machine.
    .testTarget(
      name: "RaftDBServiceTests",
      dependencies: [
        "RaftDBService", "RaftDBAPI", "KVStore", "KVWatch", "Raft",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
      ]),
    .testTarget(name: "RaftStorageTests", dependencies: ["RaftStorage", "Raft", "wal-crash-writer"]),
    // The generated etcd messages against etcd's encoding, and its gRPC method names.
    .testTarget(
      name: "EtcdAPITests",
      dependencies: ["EtcdAPI", .product(name: "GRPCCore", package: "grpc-swift-2")]),
  ],
  swiftLanguageModes: [.v6]
)
