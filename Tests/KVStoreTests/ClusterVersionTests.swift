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

  /// A replica standing in for a build from before cluster versions rejects the newer commands,
  /// the cluster version command included, exactly as that build's decoder does, and carries on.
  @Test func aReplicaOfAnOlderBuildRejectsNewerCommandsAsThatBuildWould() {
    let older = Driver(supportedClusterVersion: 1)
    older.apply(put("lock", "a"))
    #expect(
      older.apply(.compareAndDelete(key: "lock", expected: "a")).result
        == .rejected(reason: "undecodable command: unknown tag 4"))
    #expect(older.machine.get("lock")?.value == "a")
    #expect(
      older.apply(.setClusterVersion(2)).result == .rejected(reason: "undecodable command: unknown tag 5"))
    #expect(older.machine.unsupportedClusterVersion == nil)
    #expect(older.machine.clusterVersion == 1)
  }

  /// A build that knows cluster versions, handed a version above its own (a version 2 build and
  /// a version 3 the log agreed; this build and a version above its own), notes it so that its
  /// node stops instead of diverging.
  @Test(arguments: [(2, 3), (ClusterVersion.latest, ClusterVersion.latest + 1)] as [(UInt32, UInt32)])
  func aBuildThatKnowsClusterVersionsNotesOneItCannotFollow(supported: UInt32, agreed: UInt32) {
    let driver = Driver(supportedClusterVersion: supported)
    guard case .rejected = driver.apply(.setClusterVersion(agreed)).result else {
      Issue.record("a version \(supported) build applied cluster version \(agreed)")
      return
    }
    #expect(driver.machine.unsupportedClusterVersion == agreed)
    #expect(driver.machine.clusterVersion == 1)
  }

  /// A version 2 build rejects the multi-version commands as unknown, as the build before them does.
  @Test func aVersion2ReplicaRejectsMultiVersionCommands() {
    let older = Driver(supportedClusterVersion: 2)
    #expect(
      older.apply(.compact(revision: 1)).result == .rejected(reason: "undecodable command: unknown tag 7"))
  }

  /// The replicated gate: until the log has agreed version 2, every replica of this build rejects
  /// compare-and-delete too, as the older builds do, whoever proposed it.
  @Test func everyReplicaRejectsACommandTheLogHasNotAgreed() {
    let driver = Driver()
    driver.apply(put("lock", "a"))
    guard case .rejected(let reason) = driver.apply(.compareAndDelete(key: "lock", expected: "a")).result
    else {
      Issue.record("applied before the cluster version rose")
      return
    }
    #expect(reason.contains("needs cluster version 2"))
    #expect(driver.machine.get("lock")?.value == "a")
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
    // A stand-in for a build from before cluster versions cannot read format 2, as that build cannot.
    let older = KVStateMachine(supportedClusterVersion: 1)
    #expect(throws: KVDecodingError.unsupportedVersion(2)) {
      try restore(older, appliedIndex: driver.machine.appliedIndex, from: after)
    }
    #expect(older.count == 0, "nothing of the snapshot was installed")
  }
}
