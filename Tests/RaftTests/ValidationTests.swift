import Testing

@_spi(Testing) @testable import Raft

/// Validation at the core's boundary (`RaftNode.step`): what a stranger on the peer network sent in
/// the hardening review, each refused without changing the node, and nothing reaching a precondition.
@Suite struct ValidationTests {
  func heartbeat(from: UInt64, to: UInt64, term: UInt64, commit: UInt64 = 0) -> Message {
    Message(
      from: NodeID(from), to: NodeID(to), term: term,
      body: .heartbeat(Heartbeat(commit: commit, readRound: 1)))
  }

  /// Issue item 1: a term no correct peer can produce is refused, not adopted (adopting 2^63 − 1
  /// bricked the cluster; 2^64 − 1 trapped at once).
  @Test(arguments: [UInt64.max, UInt64(Int64.max), RaftLimits.maxTerm + 1])
  func impossibleTermsAreRefused(term: UInt64) throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let before = cluster[2].currentTerm
    #expect(cluster[2].step(heartbeat(from: 1, to: 2, term: term)) == .termOutOfRange)
    #expect(cluster[2].step(heartbeat(from: 99, to: 2, term: term)) == .termOutOfRange)
    #expect(cluster[2].currentTerm == before)
    #expect(cluster[2].knownLeader == NodeID(1))
  }

  /// Item 2: a heartbeat at the leader's own term, from a stranger or claiming a member's id, does
  /// not trip the "two leaders" precondition; the leader keeps leading.
  @Test func aSecondLeaderInTheSameTermIsRefused() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    #expect(cluster[1].step(heartbeat(from: 99, to: 1, term: term)) == .unknownSender)
    #expect(cluster[1].step(heartbeat(from: 2, to: 1, term: term)) == .secondLeader)
    #expect(cluster[1].isLeader)
    // A follower of 1 refuses another leader of 1's term too.
    #expect(cluster[2].step(heartbeat(from: 3, to: 2, term: term)) == .secondLeader)
    #expect(cluster[2].knownLeader == NodeID(1))
  }

  /// Item 2: an append response claiming a match far beyond the leader's log is refused.
  @Test func aMatchBeyondTheLeadersLogIsRefused() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    let response = Message(
      from: NodeID(2), to: NodeID(1), term: term,
      body: .appendEntriesResponse(.accepted(matchIndex: 1_000_000_000_000)))
    #expect(cluster[1].step(response) == .unsolicitedResponse)
    let round = Message(
      from: NodeID(2), to: NodeID(1), term: term,
      body: .heartbeatResponse(HeartbeatResponse(readRound: 1 << 40)))
    #expect(cluster[1].step(round) == .unsolicitedResponse, "a round never sent would confirm reads")
    #expect(cluster[1].isLeader)
    #expect(cluster.stabilize() >= 0)
    try cluster.propose(1, "still works")
    cluster.stabilize()
    #expect(cluster.appliedCommands(2).last == "still works")
  }

  /// Item 3: an AppendEntries at term + 1 from a node that is not a member changes no one's log.
  @Test func forgedAppendsFromANonMemberChangeNothing() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    try cluster.propose(1, "real")
    cluster.stabilize()
    let term = cluster[1].currentTerm
    for raw: UInt64 in [1, 2, 3] {
      let node = cluster[raw]
      let forged = AppendEntries(
        prevLogIndex: node.lastIndex, prevLogTerm: node.term(at: node.lastIndex)!,
        entries: [
          LogEntry(index: node.lastIndex + 1, term: term + 1, kind: .command, data: Array("forged".utf8))
        ],
        leaderCommit: node.lastIndex + 1)
      let before = node.lastIndex
      #expect(
        node.step(Message(from: NodeID(99), to: NodeID(raw), term: term + 1, body: .appendEntries(forged)))
          == .unknownSender)
      #expect(node.lastIndex == before && node.currentTerm == term)
    }
    cluster.stabilize()
    #expect(cluster.appliedCommands(2) == ["real"])
  }

  /// Entries no leader could send are refused even from a member.
  @Test func impossibleEntriesAreRefused() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    let last = cluster[2].lastIndex
    let lastTerm = cluster[2].term(at: last)!
    let newerThanSender = AppendEntries(
      prevLogIndex: last, prevLogTerm: lastTerm,
      entries: [LogEntry(index: last + 1, term: term + 5, kind: .command, data: [])], leaderCommit: 0)
    #expect(
      cluster[2].step(
        Message(from: NodeID(1), to: NodeID(2), term: term, body: .appendEntries(newerThanSender)))
        == .impossibleEntries)
    let badConfiguration = AppendEntries(
      prevLogIndex: last, prevLogTerm: lastTerm,
      entries: [LogEntry(index: last + 1, term: term, kind: .configuration, data: [0xFF, 0xFF])],
      leaderCommit: 0)
    #expect(
      cluster[2].step(
        Message(from: NodeID(1), to: NodeID(2), term: term, body: .appendEntries(badConfiguration)))
        == .impossibleEntries)
    #expect(cluster[2].lastIndex == last)
  }

  /// Item 4: a vote request with the transfer flag from a stranger is refused; from a member, it
  /// does not pass the lease unless the leader confirms it ordered that campaign.
  @Test func theTransferFlagAloneDoesNotPassTheLease() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    let request = VoteRequest(
      isPreVote: false, lastLogIndex: 100, lastLogTerm: term, isLeadershipTransfer: true)
    #expect(
      cluster[2].step(Message(from: NodeID(99), to: NodeID(2), term: term + 1, body: .voteRequest(request)))
        == .unknownSender)
    #expect(
      cluster[2].step(Message(from: NodeID(3), to: NodeID(2), term: term + 1, body: .voteRequest(request)))
        == nil)
    cluster.stabilize()  // The check goes to 1, which never ordered a transfer, so no answer comes.
    #expect(cluster[2].currentTerm == term && cluster[1].isLeader)
  }

  /// Item 4: a TimeoutNow claiming to come from the leader starts no election unless the leader,
  /// asked at its own address, confirms it; a real transfer still works.
  @Test func aForgedTimeoutNowStartsNoElection() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    #expect(
      cluster[2].step(Message(from: NodeID(99), to: NodeID(2), term: term, body: .timeoutNow))
        == .unknownSender)
    #expect(
      cluster[2].step(Message(from: NodeID(3), to: NodeID(2), term: term, body: .timeoutNow))
        == .timeoutNowNotFromLeader)
    // Claiming the leader's own id: the follower asks the leader, which never sent it.
    for _ in 0..<10 {
      #expect(cluster[2].step(Message(from: NodeID(1), to: NodeID(2), term: term, body: .timeoutNow)) == nil)
      cluster.stabilize()
    }
    #expect(cluster[1].isLeader && cluster[1].currentTerm == term)
    // A forged confirmation (a nonce it never saw) is refused too.
    #expect(
      cluster[2].step(
        Message(from: NodeID(1), to: NodeID(2), term: term, body: .transferConfirm(nonce: 12345)))
        == .unsolicitedResponse)

    try cluster[1].transferLeadership(to: NodeID(2))
    cluster.stabilize()
    #expect(cluster[2].isLeader && cluster[2].currentTerm == term + 1)
  }

  /// A member whose configuration lags (it never learned of the leader) asks the members it knows,
  /// and follows the leader once one of them names it; a stranger's leadership is never vouched for.
  @Test func aLaggingMemberFollowsALeaderItsMembersVouchFor() throws {
    let node = makeNode(3, stored: storedState(voters: [1, 2, 3], term: 2))
    let unknownLeader = heartbeat(from: 4, to: 3, term: 3)
    #expect(node.step(unknownLeader) == .unknownSender)
    let queries = node.takeReady().messages.filter { if case .leaderQuery = $0.body { true } else { false } }
    #expect(Set(queries.map(\.to)) == [NodeID(1), NodeID(2)])
    #expect(
      node.step(Message(from: NodeID(99), to: NodeID(3), term: 3, body: .leaderHint(leader: NodeID(4))))
        == .unknownSender)
    #expect(node.step(unknownLeader) == .unknownSender)
    #expect(
      node.step(Message(from: NodeID(2), to: NodeID(3), term: 3, body: .leaderHint(leader: NodeID(4)))) == nil
    )
    #expect(node.step(unknownLeader) == nil)
    #expect(node.knownLeader == NodeID(4) && node.currentTerm == 3)
  }

  /// A member whose configuration lags refuses a candidate it does not know, asks the members it
  /// knows about it, and votes once one of them vouches for it: without its vote the candidate of a
  /// newer configuration may lack a quorum (a simulator seed deadlocked that way). A stranger's
  /// candidacy is never vouched for.
  @Test func aLaggingMemberVotesForACandidateItsMembersVouchFor() throws {
    // Without check-quorum: a fresh node honours the lease it may have granted before a restart.
    let node = makeNode(3, stored: storedState(voters: [1, 3], term: 2)) { $0.checkQuorum = false }
    let request = Message(
      from: NodeID(4), to: NodeID(3), term: 3,
      body: .voteRequest(
        VoteRequest(isPreVote: true, lastLogIndex: 10, lastLogTerm: 2, isLeadershipTransfer: false)))
    #expect(node.step(request) == .unknownSender)
    let queries = node.takeReady().messages.filter {
      if case .memberQuery(let candidate) = $0.body { candidate == NodeID(4) } else { false }
    }
    #expect(queries.map(\.to) == [NodeID(1)])
    // A member that does not hold the candidate says nothing; one that does names it.
    let unaware = makeNode(1, stored: storedState(voters: [1, 3], term: 2))
    #expect(
      unaware.step(Message(from: NodeID(3), to: NodeID(1), term: 2, body: .memberQuery(candidate: NodeID(4))))
        == nil)
    #expect(!unaware.takeReady().messages.contains { if case .leaderHint = $0.body { true } else { false } })
    let aware = makeNode(1, stored: storedState(voters: [1, 3, 4], term: 2))
    #expect(
      aware.step(Message(from: NodeID(3), to: NodeID(1), term: 2, body: .memberQuery(candidate: NodeID(4))))
        == nil)
    let hint = try #require(
      aware.takeReady().messages.first { if case .leaderHint = $0.body { true } else { false } })
    guard case .leaderHint(let named) = hint.body else { return }
    #expect(named == NodeID(4) && hint.to == NodeID(3))
    // A stranger cannot vouch; a member can.
    #expect(
      node.step(Message(from: NodeID(99), to: NodeID(3), term: 2, body: .leaderHint(leader: NodeID(4))))
        == .unknownSender)
    #expect(node.step(request) == .unknownSender)
    #expect(
      node.step(Message(from: NodeID(1), to: NodeID(3), term: 2, body: .leaderHint(leader: NodeID(4)))) == nil
    )
    #expect(node.step(request) == nil)
    let answer = try #require(node.takeReady().messages.first { $0.to == NodeID(4) })
    guard case .voteResponse(let response) = answer.body else {
      Issue.record("expected a vote response, got \(answer)")
      return
    }
    #expect(response.isPreVote && response.granted)
  }

  /// A joining node hears only from the members its seed named.
  @Test func aJoiningNodeHearsOnlyFromTheMembersItWasToldOf() {
    let node = makeNode(4, stored: .empty)
    #expect(
      node.step(heartbeat(from: 1, to: 4, term: 5)) == .unknownSender,
      "a node that knows nobody trusts nobody")
    node.trustWhileJoining([NodeID(1), NodeID(2), NodeID(3)])
    #expect(node.step(heartbeat(from: 99, to: 4, term: 6)) == .unknownSender)
    #expect(node.step(heartbeat(from: 1, to: 4, term: 5)) == nil)
    #expect(node.knownLeader == NodeID(1) && node.currentTerm == 5)
  }

  /// Item 11: membership changes stop at `Configuration.maxMembers`, before anything is proposed,
  /// and whatever that allows encodes and decodes (the encoder and decoder share their bound).
  @Test func membershipIsBoundedBeforeItIsProposed() throws {
    var configuration = Configuration(voters: [NodeID(1)])
    for raw in 2...UInt64(Configuration.maxMembers) {
      configuration = try configuration.applying(
        .init(.addLearner, NodeID(raw), context: [UInt8](repeating: 7, count: 64)))
    }
    #expect(configuration.members.count == Configuration.maxMembers)
    #expect(throws: ConfigurationChangeError.tooManyMembers(limit: Configuration.maxMembers)) {
      try configuration.applying(.init(.addLearner, NodeID(10_000)))
    }
    #expect(throws: ConfigurationChangeError.tooManyMembers(limit: Configuration.maxMembers)) {
      try configuration.applying(.init(.addVoter, NodeID(10_000)))
    }
    #expect(try Configuration(decoding: configuration.encoded()) == configuration)
    let atFormatBound = Configuration(
      members: (1...UInt64(Configuration.memberCountLimit)).map { Member(id: NodeID($0), isVoter: $0 == 1) })
    #expect(try Configuration(decoding: atFormatBound.encoded()) == atFormatBound)
    #expect(throws: ConfigurationChangeError.self) {
      try Configuration(voters: [NodeID(1)]).applying(
        .init(
          .addLearner, NodeID(2), context: [UInt8](repeating: 0, count: Configuration.contextSizeLimit + 1)))
    }
    // The leader refuses the change before appending anything.
    let cluster = TestCluster(voters: [1])
    try #require(cluster.electLeader(1))
    let lastIndex = cluster[1].lastIndex
    #expect(throws: ProposalError.self) {
      try cluster[1].proposeConfigurationChange(
        .init(
          .addLearner, NodeID(2), context: [UInt8](repeating: 0, count: Configuration.contextSizeLimit + 1)))
    }
    #expect(cluster[1].lastIndex == lastIndex)
  }
}
