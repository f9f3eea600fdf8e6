import Foundation
import Testing

/// An in-place upgrade: this build started on data directories written by earlier builds (snapshot
/// formats 1 and 2, see Tests/Fixtures/README.md). It must read them, serve the same data, raise
/// the cluster version to the multi-version store's, and then write and reread format 3.
@Suite(.serialized) struct UpgradeTests {
  static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures")

  @Test(arguments: ["datadir-b0441db-format1.tgz", "datadir-9d89de7-format2.tgz"])
  func anOlderDataDirectoryIsUpgradedOnStart(fixture: String) async throws {
    let harness = try ClusterHarness()
    let node = harness.addNode("n1")
    try FileManager.default.createDirectory(at: node.directory, withIntermediateDirectories: true)
    let untar = Process()
    untar.executableURL = URL(fileURLWithPath: "/usr/bin/tar")
    untar.arguments = ["xzf", Self.fixtures.appendingPathComponent(fixture).path, "-C", node.directory.path]
    try untar.run()
    untar.waitUntilExit()
    try #require(untar.terminationStatus == 0, "tar could not unpack \(fixture)")
    let snapshotsBefore = try FileManager.default.contentsOfDirectory(
      atPath: node.directory.appendingPathComponent("snapshots").path)

    try harness.start("n1", arguments: ["-snapshot-threshold", "20"])
    try #require(await harness.waitForLeader(among: ["n1"]) != nil, "\(harness.log("n1"))")
    try await expectTheFixtureData(harness)

    // The leader raises the cluster version to 3 (every member, itself, supports it).
    let raised = await harness.eventually(timeout: .seconds(20)) {
      let body = (try? await harness.request("n1", .GET, "/version"))?.bodyText ?? ""
      return body.contains(#""cluster":3"#)
    }
    try #require(raised, "cluster version not raised:\n\(harness.log("n1"))")

    // Enough writes for a new snapshot, which is now format 3; a kill -9 and restart reads it.
    for i in 0..<30 {
      let response = try await harness.request("n1", .POST, "/key", body: #"{"new/k\#(i)": "n\#(i)"}"#)
      #expect(response.status == .ok, "\(response.bodyText)")
    }
    let snapshots = node.directory.appendingPathComponent("snapshots")
    let wroteFormat3 = await harness.eventually {
      let names = (try? FileManager.default.contentsOfDirectory(atPath: snapshots.path)) ?? []
      return names.contains { name in
        !snapshotsBefore.contains(name)
          && Self.formatOfKeyValueSnapshot(in: snapshots.appendingPathComponent(name)) == 3
      }
    }
    #expect(wroteFormat3, "no format 3 snapshot written:\n\(harness.log("n1"))")
    harness.kill("n1")
    try harness.start("n1", arguments: ["-snapshot-threshold", "20"])
    try #require(await harness.waitForLeader(among: ["n1"]) != nil, "\(harness.log("n1"))")
    try await expectTheFixtureData(harness)
    for i in 0..<30 {
      let response = try await harness.request("n1", .GET, "/key/new/k\(i)?level=consistent")
      #expect(response.bodyText.contains(#""n\#(i)""#), "new/k\(i): \(response.bodyText)")
    }
    harness.stopAll()
  }

  func expectTheFixtureData(_ harness: ClusterHarness) async throws {
    let k1 = try await harness.request("n1", .GET, "/key/app/k1?level=consistent")
    #expect(k1.status == .ok && k1.bodyText.contains(#""v1b""#), "app/k1: \(k1.bodyText)")
    let k2 = try await harness.request("n1", .GET, "/key/app/k2?level=consistent")
    #expect(k2.status == .notFound, "app/k2 was deleted: \(k2.bodyText)")
    for i in 3...30 {
      let response = try await harness.request("n1", .GET, "/key/app/k\(i)?level=consistent")
      #expect(response.bodyText.contains(#""v\#(i)""#), "app/k\(i): \(response.bodyText)")
    }
    let tail = try await harness.request("n1", .GET, "/key/tail33?level=consistent")
    #expect(tail.bodyText.contains(#""t33""#), "tail33 (from the log after the snapshot): \(tail.bodyText)")
  }

  /// The format byte that follows the key-value snapshot's magic "RKVS" in a snapshot file.
  static func formatOfKeyValueSnapshot(in file: URL) -> UInt8? {
    guard let data = try? Data(contentsOf: file) else { return nil }
    let bytes = [UInt8](data)
    let magic: [UInt8] = Array("RKVS".utf8)
    guard bytes.count > magic.count else { return nil }
    for start in 0..<(bytes.count - magic.count) where Array(bytes[start..<start + magic.count]) == magic {
      return bytes[start + magic.count]
    }
    return nil
  }
}
