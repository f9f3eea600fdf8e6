import Foundation
import Testing

/// `-auto-compaction-mode` and `-auto-compaction-retention` on real processes: the leader
/// compacts the history through the log, reads of the compacted past answer the compacted error
/// with the revision to start from, and recent revisions still read.
@Suite(.serialized) struct AutoCompactionProcessTests {
  static func json(_ text: String) -> [String: Any] { MultiVersionHTTPTests.json(text) }

  /// The store revision as `node` has applied it.
  static func storeRevision(_ harness: ClusterHarness, _ node: String, level: String = "consistent")
    async throws
    -> Int
  {
    let read = try await harness.request(node, .GET, "/key/k?meta=true&level=\(level)")
    return try #require(json(read.bodyText)["revision"] as? Int, "\(read.bodyText)")
  }

  /// The compacted revision a read at `revision` reports, or nil if it reads.
  static func compactedRevision(
    _ harness: ClusterHarness, _ node: String, at revision: Int, level: String = "consistent"
  ) async -> Int? {
    guard let read = try? await harness.request(node, .GET, "/key/k?revision=\(revision)&level=\(level)"),
      read.status == .badRequest
    else { return nil }
    return json(read.bodyText)["compact_revision"] as? Int
  }

  static func put(_ harness: ClusterHarness, _ node: String, _ count: Int) async throws {
    for i in 0..<count {
      let put = try await harness.request(node, .POST, "/key", body: #"{"k": "v\#(i)"}"#)
      #expect(put.status == .ok, "\(put.bodyText)")
    }
  }

  /// Revision mode keeps the last N revisions: with a check every 200 ms (the test knob for etcd's
  /// 5 minutes), the leader compacts at the current revision minus 5 once the puts stop, every
  /// member applies it, and only the leader proposed it.
  @Test func revisionModeKeepsTheLastRevisions() async throws {
    let harness = try ClusterHarness(
      extraArguments: ["-auto-compaction-mode", "revision", "-auto-compaction-retention", "5"],
      extraEnvironment: ["RAFTDB_TEST_AUTO_COMPACTION_CHECK_MS": "200"])
    let names = ["node01", "node02", "node03"]
    let leader = try await harness.startCluster(names)
    try #require(await MultiVersionHTTPTests.waitForVersion3(harness, names), "\(harness.log(leader))")
    try await Self.put(harness, leader, 20)
    let revision = try await Self.storeRevision(harness, leader)
    #expect(revision >= 20)
    let target = revision - 5
    let compacted = await harness.eventually(timeout: .seconds(30)) {
      await Self.compactedRevision(harness, leader, at: target - 1) == target
    }
    #expect(compacted, "compacted at \(target):\n\(harness.log(leader))")
    // The retained revisions still read, on the leader and, once applied, on every member.
    for past in target...revision {
      let read = try await harness.request(leader, .GET, "/key/k?revision=\(past)&level=consistent")
      #expect(read.status == .ok, "revision \(past): \(read.bodyText)")
    }
    let everywhere = await harness.eventually(timeout: .seconds(20)) {
      for name in names where await Self.compactedRevision(harness, name, at: 1, level: "stale") != target {
        return false
      }
      return true
    }
    #expect(everywhere, "every member applied the compaction")
    // Only the leader's compactor proposed it; the followers hold none.
    #expect(harness.log(leader).contains("auto compaction: proposing"), "\(harness.log(leader))")
    #expect(await harness.metric("raftdb_mvcc_auto_compactions_total", leader) >= 1)
    #expect(await harness.metric("raftdb_mvcc_compact_revision", leader) == Double(target))
    for follower in names where follower != leader {
      #expect(!harness.log(follower).contains("auto compaction: proposing"), "\(harness.log(follower))")
      #expect(await harness.metric("raftdb_mvcc_auto_compactions_total", follower) == 0)
    }
    // Once the revision moves on by more than the retention, the next check compacts again.
    try await Self.put(harness, leader, 3)
    let moved = await harness.eventually(timeout: .seconds(30)) {
      await Self.compactedRevision(harness, leader, at: 1) == target + 3
    }
    #expect(moved, "compacted again at \(target + 3):\n\(harness.log(leader))")
    harness.stopAll()
  }

  /// Periodic mode with a 3-second retention (etcd accepts such durations: it samples every
  /// 300 ms): nothing is compacted before the retention has passed, then the history older than
  /// it is compacted, and the revisions written since still read.
  @Test func periodicModeCompactsWhatIsOlderThanTheRetention() async throws {
    let harness = try ClusterHarness(extraArguments: ["-auto-compaction-retention", "3s"])
    harness.addNode("node01")
    try harness.start("node01")
    let node = try #require(await harness.waitForLeader(among: ["node01"]))
    try #require(await MultiVersionHTTPTests.waitForVersion3(harness, [node]), "\(harness.log(node))")
    try await Self.put(harness, node, 5)
    let first = try await Self.storeRevision(harness, node)
    // The first compaction comes a whole retention after the compactor started, to a revision
    // sampled then or later: at most `first`, since nothing was written after it.
    // (A compaction at 1 refuses no read, so the metric tells.)
    var compactedAt = 0.0
    let compacted = await harness.eventually(timeout: .seconds(30)) {
      compactedAt = await harness.metric("raftdb_mvcc_compact_revision", node)
      return compactedAt >= 1
    }
    #expect(compacted, "compacted within the retention and a sample:\n\(harness.log(node))")
    #expect(compactedAt <= Double(first), "compacted at \(compactedAt)")
    // New history is kept for the retention: read just after it was written.
    let wrote = ContinuousClock.now
    try await Self.put(harness, node, 5)
    let second = try await Self.storeRevision(harness, node)
    let recent = try await harness.request(node, .GET, "/key/k?revision=\(first + 1)&level=consistent")
    if ContinuousClock.now - wrote < .seconds(3) {
      #expect(recent.status == .ok, "written less than a retention ago: \(recent.bodyText)")
    }
    // And compacted once it is older than the retention and the writes stopped.
    let caughtUp = await harness.eventually(timeout: .seconds(30)) {
      await Self.compactedRevision(harness, node, at: first) == second
    }
    #expect(caughtUp, "compacted at \(second):\n\(harness.log(node))")
    let latest = try await harness.request(node, .GET, "/key/k?revision=\(second)&level=consistent")
    #expect(latest.status == .ok, "\(latest.bodyText)")
    #expect(harness.log(node).contains("mode=periodic"), "the compaction is logged with its mode")
    harness.stopAll()
  }
}
