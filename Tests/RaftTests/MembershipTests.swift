import Testing

@_spi(Testing) @testable import Raft

/// A membership change proposed to the leader of voters 1, 2, 3 and learner 4, and why it is invalid.
struct InvalidChangeCase: Sendable, CustomTestStringConvertible {
  var voters: [UInt64] = [1, 2, 3]
  var learners: [UInt64] = [4]
  var change: ConfigurationChange
  var error: ConfigurationChangeError
  var testDescription: String { "\(change) -> \(error)" }

  static let all: [InvalidChangeCase] = [
    InvalidChangeCase(change: .init(.addVoter, NodeID(2)), error: .alreadyVoter(NodeID(2))),
    InvalidChangeCase(change: .init(.addLearner, NodeID(2)), error: .alreadyMember(NodeID(2))),
    InvalidChangeCase(change: .init(.addLearner, NodeID(4)), error: .alreadyMember(NodeID(4))),
    InvalidChangeCase(change: .init(.promoteLearner, NodeID(9)), error: .notAMember(NodeID(9))),
    InvalidChangeCase(change: .init(.promoteLearner, NodeID(2)), error: .notALearner(NodeID(2))),
    InvalidChangeCase(change: .init(.removeMember, NodeID(9)), error: .notAMember(NodeID(9))),
    InvalidChangeCase(
      voters: [1], learners: [], change: .init(.removeMember, NodeID(1)), error: .removesLastVoter(NodeID(1))),
  ]
}

@Suite struct MembershipTests {
  /// Thesis §4.1 (lesson 09 fix): changes wait for the leader's no-op, else two leaders' changes may overlap.
  @Test func configurationChangeWaitsForTheLeadersNoop() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.campaign(1, deliver: \.isVoteTraffic))
    #expect(cluster[1].commitIndex < cluster[1].lastIndex, "the no-op is still in flight")
    #expect(throws: ProposalError.leaderNotReady) {
      try cluster[1].proposeConfigurationChange(.init(.addLearner, NodeID(4)))
    }
    cluster.stabilize()
    #expect(throws: Never.self) { try cluster[1].proposeConfigurationChange(.init(.addLearner, NodeID(4))) }
  }

  /// Thesis §4.1: single-server changes are safe only one at a time, so a second waits for the first.
  @Test func secondChangeWaitsForTheFirstToCommit() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    try cluster[1].proposeConfigurationChange(.init(.addLearner, NodeID(4)))
    #expect(throws: ProposalError.configurationChangePending) {
      try cluster[1].proposeConfigurationChange(.init(.addLearner, NodeID(5)))
    }
    cluster.stabilize()
    #expect(throws: Never.self) { try cluster[1].proposeConfigurationChange(.init(.addLearner, NodeID(5))) }
  }

  /// Thesis §4.1: a change must describe a valid next configuration (and never leave zero voters).
  @Test(arguments: InvalidChangeCase.all)
  func invalidChangesAreRefused(_ invalid: InvalidChangeCase) throws {
    let cluster = TestCluster(voters: invalid.voters, learners: invalid.learners)
    try #require(cluster.electLeader(1))
    let lastIndex = cluster[1].lastIndex
    #expect(throws: ProposalError.invalidConfigurationChange(invalid.error)) {
      try cluster[1].proposeConfigurationChange(invalid.change)
    }
    #expect(cluster[1].lastIndex == lastIndex)
  }

  /// Thesis §4.2.1: a learner receives the log but does not count toward commitment until promoted.
  @Test func learnerReplicatesButCountsOnlyOncePromoted() throws {
    let cluster = TestCluster(voters: [1, 2])
    try #require(cluster.electLeader(1))
    cluster.addBlankNode(3)
    try cluster[1].proposeConfigurationChange(.init(.addLearner, NodeID(3), context: [42]))
    cluster.stabilize()
    let withLearner = Configuration(members: [
      Member(id: NodeID(1), isVoter: true), Member(id: NodeID(2), isVoter: true),
      Member(id: NodeID(3), isVoter: false, context: [42]),
    ])
    #expect(cluster[1].configuration == withLearner)
    #expect(cluster[3].configuration == withLearner)
    #expect(cluster[3].status.isLearner)
    #expect(cluster.logTerms(3) == cluster.logTerms(1))
    #expect(cluster[3].commitIndex == cluster[1].commitIndex)

    // With voter 2 cut off, the learner's acknowledgement alone must not commit anything.
    cluster.isolated = [NodeID(2)]
    let x = try cluster.propose(1, "x")
    cluster.deliver()
    #expect(cluster[3].lastIndex == x.index, "the learner has the entry")
    #expect(cluster[1].commitIndex == x.index - 1)

    // Promoted, it is one of two voters out of three reachable: its acknowledgements now commit.
    let promotion = try cluster[1].proposeConfigurationChange(.init(.promoteLearner, NodeID(3)))
    cluster.drain(1)
    cluster.deliver()
    #expect(cluster[1].configuration.voters == ids([1, 2, 3]))
    #expect(cluster[1].configuration.member(NodeID(3))?.context == [42], "promotion keeps the context")
    #expect(cluster[1].commitIndex == promotion.index)
    #expect(cluster.appliedCommands(3) == ["x"])
  }

  /// Thesis §4.1: a server uses the newest configuration in its log, committed or not, and loses it with it.
  @Test func followerAdoptsAConfigurationOnAppendAndRollsItBackOnTruncation() throws {
    let cluster = TestCluster(voters: [1, 2, 3, 4, 5])
    try #require(cluster.electLeader(1))
    let original = cluster[2].configuration
    let change = try cluster[1].proposeConfigurationChange(.init(.addLearner, NodeID(6)))
    cluster.drain(1)
    var readiesOf2: [Ready] = []
    cluster.readyObserver = { id, ready in if id == NodeID(2) { readiesOf2.append(ready) } }

    // Only follower 2 receives the change.
    cluster.deliver { $0.from == NodeID(1) && $0.to == NodeID(2) }
    let extended = try original.applying(.init(.addLearner, NodeID(6)))
    #expect(cluster[2].configuration == extended)
    #expect(cluster[2].committedConfiguration == original)
    #expect(cluster[2].commitIndex < change.index)
    #expect(readiesOf2.compactMap(\.configuration) == [extended])
    #expect(!readiesOf2.contains { $0.committedEntries.contains { $0.index == change.index } })

    // 1 crashes; 3 wins with 4 and 5 (2 refuses: its log is longer) and overwrites index `change.index`.
    cluster.isolated = [NodeID(1)]
    cluster.discard()
    readiesOf2 = []
    try #require(cluster.campaign(3, expiring: [2, 4, 5]))
    cluster.stabilize()
    #expect(cluster[2].term(at: change.index) == cluster[3].currentTerm)
    #expect(cluster[2].configuration == original)
    #expect(readiesOf2.compactMap(\.configuration) == [original])
    #expect(cluster.logTerms(2) == cluster.logTerms(3))
  }

  /// Thesis §4.1: once removed, a follower is no longer replicated to nor needed for commitment.
  @Test func removedFollowerNoLongerCountsOrDisrupts() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    let removal = try cluster[1].proposeConfigurationChange(.init(.removeMember, NodeID(3)))
    cluster.stabilize()
    #expect(cluster[1].commitIndex == removal.index)
    #expect(cluster[1].configuration.voters == ids([1, 2]))
    #expect(cluster[1].status.followers.map(\.id) == ids([2]))

    // Voters 1 and 2 now form the whole majority; 3 is not even sent the entry.
    let x = try cluster.propose(1, "x")
    #expect(!cluster.mailbox.contains { $0.to == NodeID(3) })
    cluster.stabilize()
    #expect(cluster[1].commitIndex == x.index)

    // The removed server times out and asks for votes; the lease keeps it from disrupting (§4.2.3).
    for _ in 0..<100 {
      cluster.tickAll()
      cluster.deliver()
    }
    #expect(cluster.leaders == [NodeID(1)] && cluster[1].currentTerm == term)
  }

  /// Thesis §4.2.2: a leader removing itself leads until the removal commits, then hands over to a voter.
  @Test func leaderRemovingItselfStepsDownOnceTheRemovalCommits() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    let removal = try cluster[1].proposeConfigurationChange(.init(.removeMember, NodeID(1)))
    cluster.drain(1)
    #expect(cluster[1].isLeader)
    #expect(cluster[1].configuration.voters == ids([2, 3]))

    // One acknowledgement is not a majority of {2, 3}, and the leader no longer counts itself.
    cluster.deliver { $0.isBetween(1, 2) }
    #expect(cluster[1].isLeader && cluster[1].commitIndex < removal.index)

    cluster.stabilize()
    #expect(!cluster[1].isLeader)
    #expect(cluster.leaders == [NodeID(2)], "the first up-to-date voter is told to campaign at once")
    #expect(cluster[2].currentTerm == term + 1)
    #expect(cluster[2].configuration.voters == ids([2, 3]))
    #expect(cluster[2].commitIndex == cluster[2].lastIndex && cluster[3].commitIndex == cluster[2].lastIndex)

    // The removed server never campaigns again.
    cluster.tick(1, times: 100)
    #expect(!cluster.mailbox.contains { $0.from == NodeID(1) })
  }

  /// Thesis §4.2.2: entries a leaving leader accepts before stepping down are committed by its successor.
  @Test func proposalsOfALeavingLeaderSurviveTheHandover() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    try cluster[1].proposeConfigurationChange(.init(.removeMember, NodeID(1)))
    cluster.drain(1)
    let position = try cluster.propose(1, "while leaving")
    cluster.stabilize()
    #expect(!cluster[1].isLeader)
    for _ in 0..<300 where cluster.leaders.isEmpty {
      cluster.tickAll()
      cluster.deliver()
    }
    cluster.stabilize()
    try #require(cluster.leaders.count == 1)
    let successor = cluster.leaders[0]
    #expect(successor != NodeID(1))
    #expect(cluster.nodes[successor]!.term(at: position.index) == position.term)
    #expect(
      cluster.appliedCommands(2) == ["while leaving"] && cluster.appliedCommands(3) == ["while leaving"])
  }
}
