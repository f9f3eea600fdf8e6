import Testing

@_spi(Testing) @testable import Raft

/// Check-quorum and the followers' side of the leader lease (thesis §4.2.3, §6.4.1).
@Suite struct CheckQuorumTests {
  /// Thesis §6.2: a leader that has not heard from a quorum for an election timeout steps down by itself.
  @Test(arguments: [true, false])
  func leaderStepsDownOnlyWhenCutOffFromAQuorum(isolated: Bool) throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    let timeout = 10
    if isolated { cluster.isolated = [NodeID(1)] }

    var steppedDownAfter: Int?
    for tick in 1...100 {
      cluster.tick(1)
      cluster.deliver()
      if !cluster[1].isLeader {
        steppedDownAfter = tick
        break
      }
    }
    if isolated {
      let ticks = try #require(steppedDownAfter)
      #expect(ticks >= timeout && ticks <= 2 * timeout, "stepped down after \(ticks) ticks")
      #expect(cluster[1].currentRole == .follower && cluster[1].knownLeader == nil)
      #expect(cluster[1].currentTerm == term, "stepping down needs no new term")
    } else {
      #expect(steppedDownAfter == nil, "a leader that hears from a quorum keeps leading")
    }
  }

  /// Thesis §4.2.3: a follower in lease must not help depose a live leader, unless that leader asked
  /// (which the follower confirms with the leader: a transfer flag alone is not enough).
  @Test(arguments: [0, 9, 10], [false, true])
  func followerInLeaseIgnoresVoteRequests(ticksSinceLeader: Int, isLeadershipTransfer: Bool) throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    cluster.tick(2, times: ticksSinceLeader)
    cluster.discard()

    let request = VoteRequest(
      isPreVote: false, lastLogIndex: cluster[3].lastIndex, lastLogTerm: term,
      isLeadershipTransfer: isLeadershipTransfer)
    cluster[2].step(Message(from: NodeID(3), to: NodeID(2), term: term + 1, body: .voteRequest(request)))
    let ready = cluster[2].takeReady()
    let answers = (ready.messages + ready.messagesAfterPersist).filter { $0.voteResponse != nil }

    let inLease = ticksSinceLeader < 10
    if inLease {
      #expect(answers.isEmpty)
      #expect(cluster[2].currentTerm == term)
      #expect(cluster[2].status.vote == NodeID(1))
      // A transfer campaign is checked with the leader, which never ordered this one: no vote.
      let checks = ready.messages.filter { if case .transferCheck = $0.body { true } else { false } }
      #expect(checks.map(\.to) == (isLeadershipTransfer ? [NodeID(1)] : []))
    } else {
      #expect(answers.map(\.voteResponse) == [VoteResponse(isPreVote: false, granted: true)])
      #expect(cluster[2].currentTerm == term + 1)
      #expect(cluster[2].status.vote == NodeID(3))
    }
  }

  /// Thesis §4.2.3: a restarted node may have granted a lease before crashing, so it honours one at boot.
  @Test(arguments: [(true, 0), (true, 9), (true, 10), (false, 0)] as [(Bool, Int)])
  func restartedNodeHonoursTheLeaseItMayHaveGranted(checkQuorum: Bool, ticksAfterRestart: Int) throws {
    let cluster = TestCluster(voters: [1, 2, 3]) { $0.checkQuorum = checkQuorum }
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    cluster.restart(2)
    cluster.tick(2, times: ticksAfterRestart)
    cluster.discard()

    let request = VoteRequest(
      isPreVote: false, lastLogIndex: cluster[3].lastIndex, lastLogTerm: term, isLeadershipTransfer: false)
    cluster[2].step(Message(from: NodeID(3), to: NodeID(2), term: term + 1, body: .voteRequest(request)))
    let ready = cluster[2].takeReady()
    let grants = ready.messagesAfterPersist.filter(\.isGrantedRealVote)

    if checkQuorum && ticksAfterRestart < 10 {
      #expect(grants.isEmpty && ready.messages.isEmpty)
      #expect(cluster[2].currentTerm == term)
    } else {
      #expect(grants.map(\.to) == [NodeID(3)])
      #expect(cluster[2].currentTerm == term + 1)
    }
  }
}
