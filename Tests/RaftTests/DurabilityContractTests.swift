import Testing

@_spi(Testing) @testable import Raft

/// The persistence contract of `Ready` (Raft §5.2 Figure 2 "persistent state", thesis §3.8 / §10.2.1).
@Suite struct DurabilityContractTests {
  /// Figure 2: term, vote and log survive a crash, so a restarted server cannot vote twice in a term.
  @Test(arguments: [1, 2] as [UInt64])
  func restartedNodeKeepsTermVoteAndLog(raw: UInt64) throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    try cluster.propose(1, "a")
    try cluster.propose(1, "b")
    cluster.stabilize()
    let before = cluster[raw].status
    let log = cluster[raw].entries(from: 1)

    cluster.restart(raw)
    let after = cluster[raw].status
    #expect(after.term == before.term)
    #expect(after.vote == NodeID(1))
    #expect(cluster[raw].entries(from: 1) == log)
    #expect(after.role == .follower && after.leader == nil)
    #expect(after.commitIndex == before.commitIndex, "the commit hint was persisted with the hard state")

    // Having voted for 1 in this term, it refuses anyone else in the same term.
    let request = VoteRequest(
      isPreVote: false, lastLogIndex: after.lastIndex, lastLogTerm: after.term, isLeadershipTransfer: false)
    cluster[raw].step(
      Message(from: NodeID(3), to: NodeID(raw), term: after.term, body: .voteRequest(request)))
    let ready = cluster[raw].takeReady()
    #expect(!(ready.messages + ready.messagesAfterPersist).contains { $0.isGrantedRealVote })
    #expect(cluster[raw].status.vote == NodeID(1))
  }

  /// Figure 2: entries of term T imply the node reached T; votes leave only once durable, so none was cast.
  @Test func restoredLogAheadOfTheHardStateAdoptsItsTermWithNoVote() {
    let stored = storedState(voters: [1, 2, 3], term: 2, vote: 3, logTerms: [2, 4])
    let node = makeNode(1, stored: stored) { $0.checkQuorum = false }
    #expect(node.currentTerm == 4)
    #expect(node.status.vote == nil)
    #expect(node.lastIndex == 3)

    // So it may vote in term 4, once.
    let request = VoteRequest(isPreVote: false, lastLogIndex: 3, lastLogTerm: 4, isLeadershipTransfer: false)
    node.step(Message(from: NodeID(2), to: NodeID(1), term: 4, body: .voteRequest(request)))
    let ready = node.takeReady()
    #expect(ready.messagesAfterPersist.filter(\.isGrantedRealVote).map(\.to) == [NodeID(2)])
    #expect(ready.hardState == HardState(term: 4, vote: NodeID(2), commit: 0) && ready.mustSync)
  }

  /// Thesis §10.2.1: an append acknowledgement promises durability, so it waits for the write.
  @Test func appendAcknowledgementsLeaveOnlyAfterPersistence() throws {
    let node = makeNode(2, stored: storedState(voters: [1, 2, 3], term: 2))
    let append = AppendEntries(
      prevLogIndex: 1, prevLogTerm: 1, entries: entries(from: 2, terms: [2, 2]), leaderCommit: 1)
    node.step(Message(from: NodeID(1), to: NodeID(2), term: 2, body: .appendEntries(append)))
    let ready = node.takeReady()
    #expect(ready.entries.map(\.index) == [2, 3] && ready.mustSync)
    #expect(ready.persistedThrough == LogPosition(index: 3, term: 2))
    #expect(!ready.messages.contains { $0.appendResponse != nil })
    #expect(ready.messagesAfterPersist.compactMap(\.appendResponse) == [.accepted(matchIndex: 3)])

    // A duplicate of entries it already holds is acknowledged after persistence too: the first
    // write may still be in flight.
    node.step(Message(from: NodeID(1), to: NodeID(2), term: 2, body: .appendEntries(append)))
    let duplicate = node.takeReady()
    #expect(!duplicate.messages.contains { $0.appendResponse != nil })
    #expect(duplicate.messagesAfterPersist.compactMap(\.appendResponse) == [.accepted(matchIndex: 3)])

    // So is one that lies wholly below the commit index.
    let commit = AppendEntries(prevLogIndex: 3, prevLogTerm: 2, entries: [], leaderCommit: 3)
    node.step(Message(from: NodeID(1), to: NodeID(2), term: 2, body: .appendEntries(commit)))
    _ = node.takeReady()
    #expect(node.commitIndex == 3)
    node.step(Message(from: NodeID(1), to: NodeID(2), term: 2, body: .appendEntries(append)))
    let belowCommit = node.takeReady()
    #expect(!belowCommit.messages.contains { $0.appendResponse != nil })
    #expect(belowCommit.messagesAfterPersist.compactMap(\.appendResponse) == [.accepted(matchIndex: 3)])
  }

  /// Ready contract: an ack for entries truncated before their write would promise what never reaches disk.
  @Test func acknowledgementOfEntriesTruncatedBeforeTheirWriteIsWithdrawn() {
    let node = makeNode(2, stored: storedState(voters: [1, 2, 3], term: 2))
    let old = AppendEntries(
      prevLogIndex: 1, prevLogTerm: 1, entries: entries(from: 2, terms: [2, 2, 2]), leaderCommit: 0)
    node.step(Message(from: NodeID(1), to: NodeID(2), term: 2, body: .appendEntries(old)))
    // Before that Ready is taken, leader 3 of term 3 replaces everything from index 2.
    let new = AppendEntries(
      prevLogIndex: 1, prevLogTerm: 1, entries: entries(from: 2, terms: [3]), leaderCommit: 0)
    node.step(Message(from: NodeID(3), to: NodeID(2), term: 3, body: .appendEntries(new)))

    let ready = node.takeReady()
    #expect(ready.entries.map(\.position) == [LogPosition(index: 2, term: 3)])
    let acks = ready.messagesAfterPersist.filter { $0.appendResponse != nil }
    #expect(acks.map(\.to) == [NodeID(3)], "the ack to 1 vouches for entries that will never be written")
    #expect(acks.compactMap(\.appendResponse) == [.accepted(matchIndex: 2)])
  }

  /// Ready contract: vote requests, grants and append acks promise durable state, so never skip the disk.
  @Test func promisesAreOnlyEverInMessagesAfterPersist() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    var promisesSeen = 0
    var violations: [String] = []
    cluster.readyObserver = { id, ready in
      for message in ready.messages
      where message.isAcceptedAppend || message.isGrantedRealVote || message.isRealVoteRequest {
        violations.append("\(id) sent early: \(message)")
      }
      for message in ready.messagesAfterPersist {
        if message.isAcceptedAppend || message.isGrantedRealVote || message.isRealVoteRequest {
          promisesSeen += 1
        } else {
          violations.append("\(id) delayed a non-promise: \(message)")
        }
      }
    }
    try #require(cluster.electLeader(1))
    for k in 0..<5 { try cluster.propose(1, "a\(k)") }
    cluster.stabilize()
    cluster.addBlankNode(4)
    try cluster[1].proposeConfigurationChange(.init(.addVoter, NodeID(4)))
    cluster.stabilize()
    try cluster[1].transferLeadership(to: NodeID(2))
    cluster.stabilize()
    cluster.isolated = [NodeID(3)]
    for k in 0..<5 { try cluster.propose(2, "b\(k)") }
    cluster.stabilize()
    cluster.restart(1)
    cluster.isolated = []
    for _ in 0..<100 {
      cluster.tickAll()
      cluster.deliver()
    }
    cluster.restart(2)
    for _ in 0..<100 {
      cluster.tickAll()
      cluster.deliver()
    }

    #expect(violations == [])
    #expect(promisesSeen > 20)
    try #require(cluster.leaders.count == 1)
    let leaderLog = cluster.nodes[cluster.leaders[0]]!.entries(from: 1)
    for raw: UInt64 in 1...4 { #expect(cluster[raw].entries(from: 1) == leaderLog, "node \(raw)") }
  }

  /// Ready contract step 4: truncated entries being durable says nothing about their replacements.
  @Test(arguments: [false, true])
  func stalePersistedReportForTruncatedEntriesIsIgnored(replacementHandedOut: Bool) throws {
    let node = makeNode(2, stored: storedState(voters: [1, 2, 3], term: 2))
    // Leader 1 of term 2 sends 2@2 3@2 4@2; the write is handed out but not yet durable.
    let old = AppendEntries(
      prevLogIndex: 1, prevLogTerm: 1, entries: entries(from: 2, terms: [2, 2, 2]), leaderCommit: 0)
    node.step(Message(from: NodeID(1), to: NodeID(2), term: 2, body: .appendEntries(old)))
    let first = node.takeReady()
    let stale = try #require(first.persistedThrough)
    #expect(stale == LogPosition(index: 4, term: 2))

    // Leader 3 of term 3 replaces them with 2@3 3@3 4@3 5@3 and says 4 is committed.
    let new = AppendEntries(
      prevLogIndex: 1, prevLogTerm: 1, entries: entries(from: 2, terms: [3, 3, 3, 3]), leaderCommit: 4)
    node.step(Message(from: NodeID(3), to: NodeID(2), term: 3, body: .appendEntries(new)))
    var second: Ready? = nil
    if replacementHandedOut { second = node.takeReady() }

    node.persisted(through: stale)
    #expect(node.status.persistedIndex == 1, "4@2 being durable says nothing about 4@3")
    let next = node.takeReady()
    let applied = (second?.committedEntries ?? []) + next.committedEntries
    #expect(applied.allSatisfy { $0.index < 2 }, "nothing that is not durable may be applied")

    let replacement = try #require(second?.persistedThrough ?? next.persistedThrough)
    #expect(replacement == LogPosition(index: 5, term: 3))
    node.persisted(through: replacement)
    #expect(node.status.persistedIndex == 5)
    #expect(
      node.takeReady().committedEntries.map(\.position) == entries(from: 2, terms: [3, 3, 3]).map(\.position))
  }
}
