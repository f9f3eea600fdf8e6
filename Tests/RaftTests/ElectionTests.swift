import Testing

@_spi(Testing) @testable import Raft

/// Leader election (Raft §5.2): who campaigns, when, and what the winner does first.
@Suite struct ElectionTests {
  /// §5.2/§5.4.2: a lone voter is its own majority, but its no-op commits only once its own disk holds it.
  @Test func singleVoterElectsItselfAndCommitsItsNoopOnceDurable() throws {
    let node = makeNode(1, stored: RaftNode.bootstrap(Configuration(voters: ids([1]))))
    var ticks = 0
    while !node.isLeader && ticks < 100 {
      node.tick()
      ticks += 1
    }
    #expect(node.isLeader)
    #expect(node.currentTerm == 2)
    #expect((10..<20).contains(ticks), "won after \(ticks) ticks")
    #expect(node.commitIndex == 0, "nothing is committed before the leader's own write is durable")

    let ready = node.takeReady()
    #expect(ready.entries.map(\.position) == [LogPosition(index: 2, term: 2)])
    #expect(ready.entries.first?.kind == .noop)
    #expect(ready.hardState?.term == 2 && ready.hardState?.vote == NodeID(1))
    #expect(ready.mustSync)
    #expect(ready.messages.isEmpty && ready.messagesAfterPersist.isEmpty)
    #expect(ready.softState == SoftState(role: .leader, term: 2, leader: NodeID(1)))

    node.persisted(through: try #require(ready.persistedThrough))
    #expect(node.commitIndex == 2)
    let next = node.takeReady()
    #expect(
      next.committedEntries.map(\.position) == [
        LogPosition(index: 1, term: 1), LogPosition(index: 2, term: 2),
      ])
  }

  /// §5.2 (Election Safety): at most one leader per term, and every server ends up following it.
  @Test(arguments: [3, 5], [0, 1, 2] as [UInt64])
  func clusterElectsExactlyOneLeaderThatEveryoneLearns(size: Int, seed: UInt64) throws {
    let cluster = TestCluster(voters: Array(1...UInt64(size))) {
      $0.randomSeed = $0.id.rawValue &* 7919 &+ seed
    }
    var leadersByTerm: [UInt64: Set<NodeID>] = [:]
    for _ in 0..<500 where cluster.leaders.isEmpty {
      cluster.tickAll()
      cluster.deliver()
      for node in cluster.nodes.values where node.isLeader {
        leadersByTerm[node.currentTerm, default: []].insert(node.id)
      }
    }
    cluster.stabilize()

    #expect(leadersByTerm.values.allSatisfy { $0.count == 1 })
    try #require(cluster.leaders.count == 1)
    let leader = cluster.leaders[0]
    let term = cluster.nodes[leader]!.currentTerm
    for node in cluster.nodes.values {
      #expect(node.knownLeader == leader, "\(node.id)")
      #expect(node.currentTerm == term, "\(node.id)")
      #expect(node.commitIndex == 2, "\(node.id) must have committed the leader's no-op")
      #expect(node.term(at: 2) == term)
    }
  }

  /// §5.2: timeouts are redrawn from [T, 2T) for every election, so a split vote is unlikely to repeat.
  @Test(arguments: [(10, 1), (10, 2), (4, 3), (25, 4)] as [(Int, UInt64)])
  func electionTimeoutIsRedrawnFromTheRangeForEveryElection(timeout: Int, seed: UInt64) {
    // A voter whose peers never answer: it campaigns (pre-vote) every time its timer fires.
    let node = makeNode(1, stored: RaftNode.bootstrap(Configuration(voters: ids([1, 2, 3])))) {
      $0.electionTimeoutTicks = timeout
      $0.randomSeed = seed
    }
    var campaignTicks: [Int] = []
    var tick = 0
    while campaignTicks.count < 30 && tick < 10_000 {
      node.tick()
      tick += 1
      if node.takeReady().messages.contains(where: { $0.isPreVoteRequest }) { campaignTicks.append(tick) }
    }
    let intervals = zip([0] + campaignTicks, campaignTicks).map { $1 - $0 }
    #expect(intervals.count == 30)
    #expect(intervals.allSatisfy { (timeout..<2 * timeout).contains($0) }, "\(intervals)")
    #expect(Set(intervals).count >= min(3, timeout), "timeouts were not re-drawn: \(intervals)")
    #expect(node.currentTerm == 1, "pre-vote campaigns never move the term")
  }

  /// Thesis §4.2.1: learners (non-voting members) replicate the log but must never start elections.
  @Test func learnersNeverCampaign() throws {
    let cluster = TestCluster(voters: [1, 2, 3], learners: [4])
    cluster.tick(4, times: 200)
    #expect(cluster.mailbox.isEmpty)
    #expect(cluster[4].currentRole == .follower && cluster[4].currentTerm == 1)

    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    #expect(cluster[4].knownLeader == NodeID(1), "the learner receives the log")
    cluster[4].step(Message(from: NodeID(1), to: NodeID(4), term: term, body: .timeoutNow))
    cluster.tick(4, times: 200)
    #expect(!cluster.mailbox.contains { $0.from == NodeID(4) })
    #expect(cluster[4].currentRole == .follower && cluster[4].currentTerm == term)

    // The same treatment makes a voter campaign, which is what the assertions above rule out.
    cluster.tick(2, times: 40)
    #expect(cluster.mailbox.contains { $0.from == NodeID(2) && $0.isPreVoteRequest })
  }
}
