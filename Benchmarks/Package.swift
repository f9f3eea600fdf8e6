// swift-tools-version: 6.1
import PackageDescription

// Microbenchmarks (ordo-one/benchmark) of raftdb's hot paths: the Raft core step, the peer frame codec,
// WAL append and KV apply. A separate package so that CI and the root build never compile it:
//
//   swift package --package-path Benchmarks benchmark
//
// The root package exports only `Raft` (and the simulator) as library products, so the modules
// measured here that it keeps internal to itself are compiled from the root's own source files
// through the symlinks in Linked/ and Sources/BenchRaftWire/: the same code, built with the same
// release settings, under module names of their own (SwiftPM refuses two targets of one name in a
// package graph). BenchRaftWire holds only the two codec files of RaftTransport plus a public
// entry point, because the codec functions are internal and RaftTransport is not a product.

/// A path dependency's identity is its directory's name, which differs between checkouts.
let rootIdentity =
  Context.packageDirectory.split(separator: "/").dropLast().last.map(String.init)?.lowercased() ?? "main"

let package = Package(
  name: "RaftDBBenchmarks",
  platforms: [.macOS(.v15)],
  dependencies: [
    .package(path: ".."),
    .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
  ],
  targets: [
    .target(
      name: "BenchKVStore",
      dependencies: [
        .product(name: "Raft", package: rootIdentity),
        .product(name: "HashTreeCollections", package: "swift-collections"),
      ],
      path: "Linked/KVStore"),
    .target(
      name: "BenchRaftStorage",
      dependencies: [
        .product(name: "Raft", package: rootIdentity),
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Linked/RaftStorage"),
    .target(
      name: "BenchRaftWire",
      dependencies: [
        .product(name: "Raft", package: rootIdentity),
        .product(name: "NIOCore", package: "swift-nio"),
      ],
      path: "Sources/BenchRaftWire"),
    // raftctl bench's HTTP parser and encoders (its BenchHTTP.swift), compiled here to be tested
    // without adding a test target to the root package.
    .target(name: "BenchHTTPParsing", path: "Sources/BenchHTTPParsing"),
    .testTarget(name: "BenchHTTPParsingTests", dependencies: ["BenchHTTPParsing"]),
    .executableTarget(
      name: "RaftDBBenchmarks",
      dependencies: [
        "BenchKVStore", "BenchRaftStorage", "BenchRaftWire",
        .product(name: "Raft", package: rootIdentity),
        .product(name: "Benchmark", package: "benchmark"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Benchmarks/RaftDBBenchmarks",
      plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]),
  ],
  swiftLanguageModes: [.v6]
)
