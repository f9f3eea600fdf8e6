import Testing

@_spi(Testing) @testable import Raft

/// Pre-vote (thesis §9.6): a server that could not win does not disturb the cluster by bumping terms.
@Suite struct PreVoteTests {
  /// Thesis §9.6: a partitioned server keeps asking, but never raises its term, and rejoins as a follower.
  @Test(arguments: [0, 3])
  func partitionedNodeCampaignsWithoutRaisingItsTermAndCannotDeposeOnReturn(writesWhileAway: Int) throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    let n3 = NodeID(3)

    cluster.isolated = [n3]
    var preVoteRequests = 0
    var realVoteRequests = 0
    for round in 0..<100 {
      if round < writesWhileAway { try cluster.propose(1, "w\(round)") }
      cluster.tickAll()
      preVoteRequests += cluster.mailboxCount { $0.from == n3 && $0.isPreVoteRequest }
      realVoteRequests += cluster.mailboxCount { $0.from == n3 && $0.isRealVoteRequest }
      cluster.deliver()
    }
    #expect(preVoteRequests / 2 >= 100 / 20, "it campaigns at least once per 2 election timeouts")
    #expect(realVoteRequests == 0)
    #expect(cluster[3].currentTerm == term)
    #expect(cluster[1].isLeader && cluster[1].currentTerm == term)

    // On its return its next pre-vote reaches the others before any heartbeat reaches it.
    cluster.discard()
    for _ in 0..<40 where !cluster.mailbox.contains(where: { $0.from == n3 && $0.isPreVoteRequest }) {
      cluster.tick(3)
    }
    cluster.isolated = []
    cluster.deliver { $0.isVoteTraffic }
    #expect(cluster[3].currentTerm == term && cluster[1].isLeader)
    for _ in 0..<50 {
      cluster.tickAll()
      cluster.deliver()
    }
    #expect(cluster.leaders == [NodeID(1)])
    #expect(cluster[1].currentTerm == term, "the returning node must not force a new election")
    #expect(cluster[3].knownLeader == NodeID(1) && cluster[3].currentRole == .follower)
    #expect(cluster.logTerms(3) == cluster.logTerms(1))
    #expect(cluster[3].commitIndex == cluster[1].commitIndex)
  }

  /// Thesis §9.6 (why pre-vote exists): without it the same partition inflates the isolated server's term.
  @Test func withoutPreVoteAPartitionedNodeInflatesItsTerm() throws {
    let cluster = TestCluster(voters: [1, 2, 3]) { $0.preVote = false }
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    cluster.isolated = [NodeID(3)]
    for _ in 0..<100 {
      cluster.tickAll()
      cluster.deliver()
    }
    #expect(cluster[3].currentTerm >= term + 5)
  }

  /// Thesis §9.6: granting a pre-vote is a hypothetical answer, so the voter keeps its term, vote and leader.
  @Test func preVoteGrantLeavesTheVotersTermAndVoteAlone() throws {
    // Without check-quorum a follower answers pre-votes even while it hears from its leader.
    let cluster = TestCluster(voters: [1, 2, 3]) { $0.checkQuorum = false }
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm

    // 3 stops hearing from the leader and asks for pre-votes; only 2 gets the request.
    cluster.dropRule = { $0.isBetween(1, 3) }
    for _ in 0..<40 where !cluster.mailbox.contains(where: { $0.from == NodeID(3) && $0.isPreVoteRequest }) {
      cluster.tick(3)
    }
    var readies: [Ready] = []
    cluster.readyObserver = { id, ready in if id == NodeID(2) { readies.append(ready) } }
    cluster.deliver { $0.to == NodeID(2) && $0.isPreVoteRequest }

    #expect(cluster[2].currentTerm == term)
    #expect(cluster[2].status.vote == NodeID(1))
    #expect(cluster[2].knownLeader == NodeID(1))
    #expect(readies.allSatisfy { $0.hardState == nil && $0.messagesAfterPersist.isEmpty })
    let grants = cluster.mailbox.filter { $0.from == NodeID(2) && $0.voteResponse != nil }
    #expect(grants.map(\.voteResponse) == [VoteResponse(isPreVote: true, granted: true)])
    #expect(grants.map(\.term) == [term + 1], "the grant names the term the pre-candidate would use")
  }
}
