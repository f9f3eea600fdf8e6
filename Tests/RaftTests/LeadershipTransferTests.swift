import Testing

@_spi(Testing) @testable import Raft

@Suite struct LeadershipTransferTests {
  /// Thesis §3.10: a caught-up target is told to time out at once and wins the next term.
  @Test func transferToACaughtUpVoter() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    try cluster[1].transferLeadership(to: NodeID(2))
    #expect(cluster[1].status.leadershipTransferTarget == NodeID(2))
    cluster.drain(1)
    #expect(cluster.mailbox.filter(\.isTimeoutNow).map(\.to) == [NodeID(2)])

    // Thesis §3.10: the old leader stops accepting client requests while the transfer runs.
    #expect(throws: ProposalError.leadershipTransferInProgress(target: NodeID(2))) {
      try cluster[1].propose(Array("x".utf8))
    }
    #expect(throws: ProposalError.leadershipTransferInProgress(target: NodeID(2))) {
      try cluster[1].proposeConfigurationChange(.init(.addLearner, NodeID(4)))
    }

    cluster.stabilize()
    #expect(cluster.leaders == [NodeID(2)])
    #expect(cluster[2].currentTerm == term + 1)
    #expect(cluster[1].knownLeader == NodeID(2) && cluster[3].knownLeader == NodeID(2))
    #expect(throws: Never.self) { try cluster.propose(2, "after") }
  }

  /// Thesis §3.10: a lagging target is first brought up to date; only then is it told to campaign.
  @Test func transferToALaggingVoterCatchesItUpFirst() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    cluster.isolated = [NodeID(3)]
    for k in 0..<5 { try cluster.propose(1, "w\(k)") }
    cluster.stabilize()
    #expect(cluster[3].lastIndex < cluster[1].lastIndex)

    try cluster[1].transferLeadership(to: NodeID(3))
    cluster.drain(1)
    #expect(!cluster.mailbox.contains { $0.isTimeoutNow }, "no timeoutNow before the target has caught up")

    cluster.isolated = []
    var lastIndexesAtTimeoutNow: [(target: UInt64, leader: UInt64)] = []
    cluster.dropRule = { [unowned cluster] message in
      if message.isTimeoutNow { lastIndexesAtTimeoutNow.append((cluster[3].lastIndex, cluster[1].lastIndex)) }
      return false
    }
    for _ in 0..<10 where !cluster[3].isLeader {
      cluster.tick(1)
      cluster.deliver()
    }
    #expect(cluster[3].isLeader && cluster[3].currentTerm == term + 1)
    #expect(lastIndexesAtTimeoutNow.count == 1)
    #expect(lastIndexesAtTimeoutNow.allSatisfy { $0.target == $0.leader })
    #expect(cluster.appliedCommands(3) == ["w0", "w1", "w2", "w3", "w4"])
  }

  /// Thesis §3.10: only the leader can hand over, and only to another voter (learners cannot be elected).
  @Test(
    arguments: [
      (1, 4, LeadershipTransferError.notAVoter(NodeID(4))),
      (1, 9, .notAVoter(NodeID(9))),
      (1, 1, .alreadyLeader),
      (2, 3, .notLeader(leader: NodeID(1))),
    ] as [(UInt64, UInt64, LeadershipTransferError)])
  func invalidTransfersAreRefused(caller: UInt64, target: UInt64, error: LeadershipTransferError) throws {
    let cluster = TestCluster(voters: [1, 2, 3], learners: [4])
    try #require(cluster.electLeader(1))
    #expect(throws: error) { try cluster[caller].transferLeadership(to: NodeID(target)) }
    #expect(cluster[1].status.leadershipTransferTarget == nil)
    #expect(throws: Never.self) { try cluster.propose(1, "still accepted") }
  }

  /// Thesis §3.10: a transfer that does not complete within an election timeout is abandoned.
  @Test func transferToAnUnreachableTargetIsAbandonedAfterAnElectionTimeout() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    cluster.isolated = [NodeID(2)]
    try cluster[1].transferLeadership(to: NodeID(2))
    for _ in 0..<9 {
      cluster.tick(1)
      cluster.deliver()
    }
    #expect(throws: ProposalError.leadershipTransferInProgress(target: NodeID(2))) {
      try cluster[1].propose(Array("x".utf8))
    }
    cluster.tick(1)
    cluster.deliver()
    #expect(cluster[1].status.leadershipTransferTarget == nil)
    #expect(throws: Never.self) { try cluster.propose(1, "x") }
    #expect(cluster[1].isLeader && cluster[1].currentTerm == term)
  }
}
