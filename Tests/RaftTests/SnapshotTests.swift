import Testing

@_spi(Testing) @testable import Raft

/// Log compaction and InstallSnapshot (Raft §7, thesis chapter 5).
@Suite struct SnapshotTests {
  /// Builds voters 1, 2, 3 led by 1, where 3 missed `missed` entries that 1 then compacted away
  /// (keeping `retain`). Returns the snapshot metadata.
  private func laggingFollowerBehindCompaction(
    missed: Int, before: Int = 0, retain: UInt64 = 0, retainBytes: Int = .max
  ) throws -> (TestCluster, SnapshotMetadata) {
    let cluster = TestCluster(voters: [1, 2, 3]) {
      $0.compactionRetainEntries = retain
      $0.compactionRetainBytes = retainBytes
    }
    try #require(cluster.electLeader(1))
    for k in 0..<before { try cluster.propose(1, "b\(k)") }
    cluster.stabilize()
    cluster.isolated = [NodeID(3)]
    for k in 0..<missed { try cluster.propose(1, "m\(k)") }
    cluster.stabilize()
    let commit = cluster[1].commitIndex
    let metadata = try #require(cluster[1].snapshotMetadata(at: commit))
    try #require(cluster[1].compactLog(through: commit))
    cluster.isolated = []
    return (cluster, metadata)
  }

  /// Raft §7: compaction is allowed only for state that is applied and durable locally.
  @Test func compactionRequiresAppliedAndDurableEntries() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let applied = cluster[1].status.appliedIndex
    #expect(!cluster[1].compactLog(through: applied + 1), "not applied (not even in the log)")

    // Commit an entry with the followers' acknowledgements while the leader's own copy is not durable.
    let position = try cluster[1].propose(Array("a".utf8))
    let ready = cluster[1].takeReady()
    cluster.mailbox.append(contentsOf: ready.messages)
    cluster.deliver()
    #expect(cluster[1].commitIndex == position.index)
    #expect(!cluster[1].compactLog(through: position.index), "committed but neither durable nor applied here")

    cluster[1].persisted(through: try #require(ready.persistedThrough))
    cluster.drain(1)
    #expect(cluster[1].status.appliedIndex == position.index)
    #expect(cluster[1].compactLog(through: position.index))
    #expect(cluster[1].snapshotMetadata.index == position.index)
    #expect(cluster[1].status.firstIndex == position.index + 1)
    #expect(!cluster[1].compactLog(through: position.index), "not newer than the current snapshot")
  }

  /// Raft §7: a follower whose missing entries were compacted away receives the snapshot, then the log.
  @Test func laggingFollowerReceivesTheSnapshotAndThenTheLog() throws {
    let (cluster, metadata) = try laggingFollowerBehindCompaction(missed: 5)
    #expect(metadata.configuration == Configuration(voters: ids([1, 2, 3])))
    var snapshotReadies: [Ready] = []
    var installMessages = 0
    cluster.readyObserver = { id, ready in
      if id == NodeID(3) && ready.snapshot != nil { snapshotReadies.append(ready) }
      installMessages += ready.messages.filter { $0.installedSnapshot != nil }.count
    }
    for _ in 0..<20 where cluster[3].commitIndex < metadata.index {
      cluster.tick(1)
      cluster.deliver()
    }

    #expect(installMessages == 1)
    try #require(snapshotReadies.count == 1)
    let ready = snapshotReadies[0]
    #expect(ready.snapshot == metadata)
    #expect(ready.configuration == metadata.configuration)
    #expect(ready.persistedThrough == metadata.position)
    #expect(ready.mustSync)
    #expect(ready.entries.isEmpty && ready.committedEntries.isEmpty)
    #expect(
      ready.messagesAfterPersist.compactMap(\.appendResponse) == [.accepted(matchIndex: metadata.index)])
    #expect(cluster.durableState(3).snapshot == metadata)

    let status = cluster[3].status
    #expect(status.snapshotIndex == metadata.index && status.firstIndex == metadata.index + 1)
    #expect(status.commitIndex == metadata.index && status.appliedIndex == metadata.index)

    // Later entries flow as ordinary appends on top of the snapshot.
    let later = try cluster.propose(1, "later")
    cluster.stabilize()
    #expect(installMessages == 1)
    #expect(cluster[3].entries(from: metadata.index + 1) == cluster[1].entries(from: metadata.index + 1))
    #expect(cluster[3].commitIndex == later.index)
    #expect(cluster.appliedCommands(3) == ["later"])
    #expect(cluster[1].status.followers.first { $0.id == NodeID(3) }?.state == "replicate")

    // Raft §7: a restarted server comes back from its snapshot plus the entries after it.
    cluster.restart(3)
    #expect(cluster[3].snapshotMetadata == metadata)
    #expect(cluster[3].configuration == metadata.configuration)
    #expect(cluster[3].entries(from: metadata.index + 1) == cluster[1].entries(from: metadata.index + 1))
    #expect(cluster[3].status.appliedIndex == metadata.index)
    let afterRestart = try cluster.propose(1, "after restart")
    cluster.stabilize()
    #expect(cluster[3].commitIndex == afterRestart.index)
    #expect(cluster.appliedCommands(3) == ["later", "after restart"])
  }

  /// Thesis §5.3 / §4.1: a snapshot records the configuration in force at its last index, not the newest one.
  @Test(arguments: [(3, false), (4, true), (5, true)] as [(UInt64, Bool)])
  func snapshotMetadataCarriesTheConfigurationAtItsIndex(index: UInt64, includesLearner: Bool) throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    try cluster.propose(1, "x")  // 3
    cluster.stabilize()
    try cluster[1].proposeConfigurationChange(.init(.addLearner, NodeID(4)))  // 4
    try cluster.propose(1, "y")  // 5
    cluster.stabilize()

    let metadata = try #require(cluster[1].snapshotMetadata(at: index))
    #expect(metadata.index == index && metadata.term == cluster[1].currentTerm)
    #expect(metadata.configuration.voters == ids([1, 2, 3]))
    #expect(metadata.configuration.learners == (includesLearner ? ids([4]) : []))
    #expect(cluster[1].snapshotMetadata(at: 6) == nil, "beyond the log")

    try #require(cluster[1].compactLog(through: 4))
    #expect(cluster[1].snapshotMetadata(at: 3) == nil, "below the snapshot")
    #expect(cluster[1].snapshotMetadata(at: index) == (index >= 4 ? metadata : nil))
  }

  /// Runs the leader until it decides to send the snapshot to 3, holding that message back.
  private func leaderStartsSendingTheSnapshot(_ cluster: TestCluster, _ metadata: SnapshotMetadata) throws
    -> Message
  {
    for _ in 0..<20 where !cluster.mailbox.contains(where: { $0.installedSnapshot != nil }) {
      cluster.tick(1)
      cluster.deliver { $0.installedSnapshot == nil }
    }
    #expect(cluster[1].status.followers.first { $0.id == NodeID(3) }?.state == "snapshot(\(metadata.index))")
    let install = try #require(cluster.mailbox.first { $0.installedSnapshot != nil })
    #expect(install.installedSnapshot == metadata && install.to == NodeID(3))
    cluster.discard()
    return install
  }

  /// etcd ReportSnapshot: a failed stream must lead to a new snapshot, even with no new write to trigger it.
  @Test func failedSnapshotTransferIsRetried() throws {
    let (cluster, metadata) = try laggingFollowerBehindCompaction(missed: 5)
    _ = try leaderStartsSendingTheSnapshot(cluster, metadata)
    var installs = 0
    cluster.readyObserver = { _, ready in
      installs += ready.messages.filter { $0.installedSnapshot != nil }.count
    }

    cluster[1].reportSnapshot(to: NodeID(3), succeeded: false)
    #expect(cluster[1].status.followers.first { $0.id == NodeID(3) }?.state == "probe")
    for _ in 0..<30 where cluster[3].commitIndex < metadata.index {
      cluster.tick(1)
      cluster.deliver()
    }
    #expect(installs == 1, "the snapshot is sent anew")
    #expect(cluster[3].status.snapshotIndex == metadata.index)
    #expect(cluster[3].commitIndex == metadata.index)

    // Later writes replicate normally from the snapshot on.
    try cluster.propose(1, "after")
    for _ in 0..<30
    where cluster[3].lastIndex < cluster[1].lastIndex || cluster[3].commitIndex < cluster[1].commitIndex {
      cluster.tick(1)
      cluster.deliver()
    }
    #expect(cluster[3].status.snapshotIndex == metadata.index)
    #expect(cluster[3].lastIndex == cluster[1].lastIndex)
  }

  /// etcd ReportSnapshot: after a good stream the leader waits for the follower's answer instead of probing.
  @Test func successfulSnapshotTransferWaitsForTheFollowersAnswer() throws {
    let (cluster, metadata) = try laggingFollowerBehindCompaction(missed: 5)
    let install = try leaderStartsSendingTheSnapshot(cluster, metadata)
    cluster.mailbox.append(install)
    cluster.deliver { $0.to == NodeID(3) }  // the follower installs it; its answer is on the way
    #expect(cluster.mailbox.compactMap(\.appendResponse) == [.accepted(matchIndex: metadata.index)])

    cluster[1].reportSnapshot(to: NodeID(3), succeeded: true)
    cluster.drain(1)
    #expect(!cluster.mailbox.contains { $0.to == NodeID(3) }, "nothing is sent while the answer is pending")
    cluster.deliver()
    #expect(cluster[1].status.followers.first { $0.id == NodeID(3) }?.state == "replicate")
    #expect(cluster[1].status.followers.first { $0.id == NodeID(3) }?.matchIndex == metadata.index)
    let later = try cluster.propose(1, "later")
    cluster.stabilize()
    #expect(cluster[3].commitIndex == later.index && cluster.appliedCommands(3) == ["later"])
  }

  /// Thesis §5.1.3 (compaction slack): entries kept below the snapshot spare slight laggards a snapshot.
  @Test(arguments: [(0, 1), (5, 0)] as [(UInt64, Int)])
  func retainedEntriesSpareASlightlyLaggingFollowerTheSnapshot(retain: UInt64, snapshots: Int) throws {
    let (cluster, metadata) = try laggingFollowerBehindCompaction(missed: 3, before: 15, retain: retain)
    #expect(cluster[1].status.firstIndex == metadata.index - retain + 1)
    var installs = 0
    cluster.readyObserver = { _, ready in
      installs += ready.messages.filter { $0.installedSnapshot != nil }.count
    }
    for _ in 0..<20 where cluster[3].commitIndex < metadata.index {
      cluster.tick(1)
      cluster.deliver()
    }
    #expect(installs == snapshots)
    #expect(cluster[3].commitIndex == metadata.index)
    #expect(cluster[3].status.snapshotIndex == (snapshots == 0 ? 0 : metadata.index))
    #expect(Array(cluster.appliedCommands(3).suffix(3)) == (snapshots == 0 ? ["m0", "m1", "m2"] : []))
  }

  /// The byte bound on retained entries wins over the count when it is tighter: each command here is
  /// two bytes ("bN"/"mN"), so 5 bytes keep the two newest entries and 0 bytes keep none.
  @Test(arguments: [(Int.max, 5), (5, 2), (0, 0)] as [(Int, UInt64)])
  func retainedEntriesAreBoundedByBytes(retainBytes: Int, kept: UInt64) throws {
    let (cluster, metadata) = try laggingFollowerBehindCompaction(
      missed: 3, before: 15, retain: 5, retainBytes: retainBytes)
    #expect(cluster[1].status.firstIndex == metadata.index - kept + 1)
  }
}
