import Testing

@_spi(Testing) @testable import Raft

/// Scenarios from the Raft paper (Ongaro & Ousterhout, 2014), step by step. Index 1 of every log is
/// the bootstrap configuration entry (term 1), which plays the part of the paper's first entry.
@Suite struct PaperFigureTests {
  /// Figure 7: a new leader for term 8 meets followers that are missing entries (a, b), have extra
  /// uncommitted entries (c, d), or both (e, f). Replication alone makes every log equal the leader's.
  @Test func figure7LeaderRepairsEveryKindOfDivergentFollower() {
    let cluster = TestCluster(voters: [1, 2, 3, 4, 5, 6, 7]) { $0.checkQuorum = false }
    // Terms of entries 2...; the leader's log is 1 1 1 4 4 5 5 6 6 6 (paper indexes 1-10).
    cluster.install(1, term: 7, logTerms: [1, 1, 4, 4, 5, 5, 6, 6, 6])
    cluster.install(2, term: 6, logTerms: [1, 1, 4, 4, 5, 5, 6, 6])  // (a)
    cluster.install(3, term: 4, logTerms: [1, 1, 4])  // (b)
    cluster.install(4, term: 6, logTerms: [1, 1, 4, 4, 5, 5, 6, 6, 6, 6])  // (c)
    cluster.install(5, term: 7, logTerms: [1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7])  // (d)
    cluster.install(6, term: 4, logTerms: [1, 1, 4, 4, 4, 4])  // (e)
    cluster.install(7, term: 3, logTerms: [1, 1, 2, 2, 2, 3, 3, 3, 3, 3])  // (f)

    cluster.elect(1)

    #expect(cluster[1].isLeader)
    #expect(cluster[1].currentTerm == 8)
    let expected: [UInt64] = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 8]  // plus the new leader's no-op
    for follower: UInt64 in 1...7 {
      #expect(cluster.logTerms(follower) == expected, "follower \(follower)")
      #expect(cluster[follower].commitIndex == 11, "follower \(follower)")
    }
  }

  /// Figure 8, with the fix: a leader never commits an entry of an earlier term by counting replicas.
  @Test func figure8EarlierTermEntryIsNotCommittedByCounting() {
    let cluster = figure8Cluster(bugs: [])
    runFigure8ThroughStepC(cluster)
    // (c) Entry 2@2 is now on S1, S2 and S3 — a majority, as S1 knows — but it is from term 2.
    #expect(cluster.logTerms(2) == [1, 2] && cluster.logTerms(3) == [1, 2])
    #expect(cluster[1].status.followers.filter { $0.matchIndex == 2 }.count == 2)
    #expect(cluster[1].commitIndex == 0, "an earlier-term entry must not be committed by counting")

    // (d) S1 crashes; S5 (last entry 2@3) wins term 5 with S2, S3 and S4, and overwrites index 2
    // everywhere it reaches. That is safe only because 2@2 was never committed.
    cluster.isolated = [NodeID(1)]
    cluster.dropRule = nil
    cluster.restart(5)
    cluster.elect(5)
    #expect(cluster[5].isLeader && cluster[5].currentTerm == 5)
    for follower: UInt64 in [2, 3, 4] {
      #expect(cluster.logTerms(follower) == [1, 3, 5], "follower \(follower)")
    }
  }

  /// Figure 8 (e): if S1 replicates an entry of its own term to a majority before crashing, that
  /// commits the earlier entries too, and S5 can no longer win an election.
  @Test func figure8CommittingCurrentTermEntryCommitsEarlierOnes() {
    let cluster = figure8Cluster(bugs: [])
    runFigure8ThroughStepC(cluster)
    cluster.dropRule = nil
    for _ in 0..<5 {
      // Heartbeat answers show the pipeline stalled; the leader probes again and resends 3@4.
      cluster.tick(1)
      cluster.deliver { $0.from == NodeID(1) || $0.to == NodeID(1) }
    }
    #expect(cluster.logTerms(2) == [1, 2, 4] && cluster.logTerms(3) == [1, 2, 4])
    #expect(cluster[1].commitIndex == 3)

    cluster.isolated = [NodeID(1)]
    cluster.discard()
    cluster.restart(5)
    let s5 = cluster[5]
    for _ in 0..<200 where !s5.isLeader {
      cluster.tick(5)
      cluster.deliver()
    }
    #expect(!s5.isLeader, "S5 lacks the committed entry 3@4 and must not win")
    #expect(cluster.logTerms(2) == [1, 2, 4] && cluster.logTerms(3) == [1, 2, 4])
  }

  /// Figure 8 with the rule broken (a planted bug): S1 commits 2@2 by counting, and S5 then erases it.
  @Test func figure8PlantedBugCommitsAnEntryThatIsLaterOverwritten() {
    let cluster = figure8Cluster(bugs: .commitEarlierTermByCounting)
    runFigure8ThroughStepC(cluster)
    #expect(cluster[1].commitIndex == 2, "the planted bug commits 2@2 by counting replicas")

    cluster.isolated = [NodeID(1)]
    cluster.dropRule = nil
    cluster.restart(5)
    cluster.elect(5)
    #expect(cluster[5].isLeader)
    #expect(
      cluster.logTerms(3) == [1, 3, 5], "the 'committed' entry 2@2 was overwritten: a safety violation")
  }

  // MARK: The figure's history, shared by the tests above

  private func figure8Cluster(bugs: PlantedBugs) -> TestCluster {
    TestCluster(voters: [1, 2, 3, 4, 5]) {
      $0.checkQuorum = false
      $0.preVote = false
      // One entry per append message, so that entry 2 can travel without entry 3.
      $0.maxMessageBytes = 24
      $0.maxInflightBytes = 24
      $0.plantedBugs = bugs
    }
  }

  private func isVote(_ message: Message) -> Bool {
    switch message.body {
    case .voteRequest, .voteResponse: true
    default: false
    }
  }

  private func carries(_ message: Message, index: UInt64) -> Bool {
    if case .appendEntries(let append) = message.body { return append.entries.contains { $0.index == index } }
    return false
  }

  /// Steps (a) to (c) of Figure 8.
  private func runFigure8ThroughStepC(_ cluster: TestCluster) {
    let s1 = NodeID(1)
    let s5 = NodeID(5)
    // (a) S1 leads term 2 and appends 2@2, which it has not yet sent anywhere.
    campaign(cluster, 1)
    #expect(cluster[1].isLeader && cluster[1].currentTerm == 2)
    cluster.discard()
    #expect(cluster.logTerms(1) == [1, 2])

    // (b) S1 crashes. S5 leads term 3 with votes from S2, S3 and S4, appends 2@3, and crashes
    // before sending it anywhere.
    cluster.isolated = [s1]
    campaign(cluster, 5)
    #expect(cluster[5].isLeader && cluster[5].currentTerm == 3)
    cluster.discard()
    #expect(cluster.logTerms(5) == [1, 3])

    // (c) S1 restarts and leads term 4 (votes from S2 and S3) with the no-op 3@4. S2 and S3 each
    // reject its first probe (they lack entry 2), then receive 2@2 alone, and are cut off before
    // 3@4 can follow. Nothing reaches S4.
    cluster.isolated = [s5]
    cluster.restart(1)
    campaign(cluster, 1)
    #expect(cluster[1].isLeader && cluster[1].currentTerm == 4)
    cluster.dropRule = { [unowned cluster] message in
      guard message.from == s1 else { return false }
      guard message.to == NodeID(2) || message.to == NodeID(3) else { return true }
      return self.carries(message, index: 3) && cluster.logTerms(message.to.rawValue).count >= 2
    }
    cluster.deliver { $0.from == s1 || $0.to == s1 }
  }

  /// Makes `raw` campaign, delivering only the election's messages, until it wins.
  private func campaign(_ cluster: TestCluster, _ raw: UInt64) {
    let node = cluster[raw]
    for _ in 0..<500 where !node.isLeader {
      cluster.tick(raw)
      cluster.deliver(where: isVote)
    }
  }
}
