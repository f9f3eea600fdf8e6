import Raft
import Testing

@testable import KVStore

/// The cluster version as the state machine keeps it: raised only through the log, never lowered,
/// carried in snapshots (whose format stays readable by older builds until it rises), and a replica
/// that stands in for an older build behaves as that build would.
@Suite struct ClusterVersionTests {
  @Test func theClusterVersionOnlyRises() {
    let driver = Driver()
    #expect(driver.machine.clusterVersion == 1)
    #expect(driver.apply(.setClusterVersion(2)).result == .clusterVersion(2))
    #expect(driver.apply(.setClusterVersion(1)).result == .clusterVersion(2))
    #expect(driver.machine.clusterVersion == 2)
    #expect(driver.machine.revision == 0, "the cluster version is not a change to the data")
    #expect(driver.machine.unsupportedClusterVersion == nil)
  }

  @Test func compareAndDeleteDeletesOnlyTheExpectedValue() {
    let driver = Driver()
    driver.apply(.setClusterVersion(2))
    driver.apply(put("lock", "owner-a"))
    #expect(
      driver.apply(.compareAndDelete(key: "lock", expected: "owner-b")).result
        == .compareAndSet(succeeded: false, current: "owner-a", revision: 1))
    #expect(driver.machine.get("lock")?.value == "owner-a")
    #expect(
      driver.apply(.compareAndDelete(key: "lock", expected: "owner-a")).result
        == .compareAndSet(succeeded: true, current: nil, revision: 2))
    #expect(driver.machine.get("lock") == nil)
    #expect(
      driver.apply(.compareAndDelete(key: "lock", expected: "owner-a")).result
        == .compareAndSet(succeeded: false, current: nil, revision: 2))
    #expect(driver.machine.dataBytes == 0)
  }

  /// A replica standing in for a build of cluster version 1 rejects the newer commands exactly as
  /// that build's decoder does, and notes a cluster version it cannot follow.
  @Test func aReplicaOfAnOlderBuildRejectsNewerCommandsAsThatBuildWould() {
    let older = Driver(supportedClusterVersion: 1)
    older.apply(put("lock", "a"))
    #expect(
      older.apply(.compareAndDelete(key: "lock", expected: "a")).result
        == .rejected(reason: "undecodable command: unknown tag 4"))
    #expect(older.machine.get("lock")?.value == "a")
    guard case .rejected = older.apply(.setClusterVersion(2)).result else {
      Issue.record("a version 1 replica applied a cluster version of 2")
      return
    }
    #expect(older.machine.unsupportedClusterVersion == 2)
    #expect(older.machine.clusterVersion == 1)
  }

  @Test func aSetClusterVersionWithAnIdempotencyKeyIsRejected() {
    let driver = Driver()
    guard case .rejected = driver.apply(.setClusterVersion(2), idempotencyKey: "k").result else {
      Issue.record("accepted")
      return
    }
    #expect(driver.machine.clusterVersion == 1)
  }

  /// While the cluster version is 1 a snapshot is written in format 1, which builds before cluster
  /// versions read; after it rises, in format 2, which carries it.
  @Test func snapshotsCarryTheClusterVersionOnceItRose() throws {
    let driver = Driver()
    driver.apply(put("k", "v"))
    let before = serializedChunks(driver.machine.snapshot()).flatMap { $0 }
    #expect(before[13 + 4] == 1, "format version byte of the header frame")
    driver.apply(.setClusterVersion(2))
    let after = serializedChunks(driver.machine.snapshot())
    #expect(after.flatMap { $0 }[13 + 4] == 2)
    let restored = KVStateMachine()
    try restore(restored, appliedIndex: driver.machine.appliedIndex, from: after)
    #expect(restored.clusterVersion == 2)
    #expect(restored.canonicalState() == driver.machine.canonicalState())
    #expect(restored.unsupportedClusterVersion == nil)
    // A replica of an older build that is handed this snapshot learns that it cannot follow.
    let older = KVStateMachine(supportedClusterVersion: 1)
    try restore(older, appliedIndex: driver.machine.appliedIndex, from: after)
    #expect(older.unsupportedClusterVersion == 2)
  }
}
