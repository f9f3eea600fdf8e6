import Testing

@_spi(Testing) @testable import Raft

/// One VoteRequest stepped into a lone voter (node 1 of 1, 2, 3) whose log is 1@1 2@2 3@3.
struct VoteCase: Sendable, CustomTestStringConvertible {
  enum Outcome: Sendable { case granted, rejected, ignored }

  var name: String
  var term: UInt64 = 3
  var vote: UInt64? = nil
  var requestTerm: UInt64
  var lastLogIndex: UInt64 = 3
  var lastLogTerm: UInt64 = 3
  var isPreVote = false
  var outcome: Outcome
  var termAfter: UInt64
  var voteAfter: UInt64?
  /// The term the answer carries (a pre-vote grant answers in the term asked about).
  var responseTerm: UInt64? = nil

  var testDescription: String { name }

  static let all: [VoteCase] = [
    VoteCase(
      name: "first request of a term is granted", requestTerm: 3, outcome: .granted, termAfter: 3,
      voteAfter: 2,
      responseTerm: 3),
    VoteCase(
      name: "second candidate in the same term is refused", vote: 3, requestTerm: 3, outcome: .rejected,
      termAfter: 3, voteAfter: 3, responseTerm: 3),
    VoteCase(
      name: "repeated request from the chosen candidate is granted again", vote: 2, requestTerm: 3,
      outcome: .granted, termAfter: 3, voteAfter: 2, responseTerm: 3),
    VoteCase(
      name: "lower last term is refused even if longer", requestTerm: 4, lastLogIndex: 9, lastLogTerm: 2,
      outcome: .rejected, termAfter: 4, voteAfter: nil, responseTerm: 4),
    VoteCase(
      name: "same last term but shorter is refused", requestTerm: 4, lastLogIndex: 2, lastLogTerm: 3,
      outcome: .rejected, termAfter: 4, voteAfter: nil, responseTerm: 4),
    VoteCase(
      name: "same last term and length is granted", requestTerm: 4, outcome: .granted, termAfter: 4,
      voteAfter: 2,
      responseTerm: 4),
    VoteCase(
      name: "higher last term is granted even if shorter", requestTerm: 5, lastLogIndex: 2, lastLogTerm: 4,
      outcome: .granted, termAfter: 5, voteAfter: 2, responseTerm: 5),
    VoteCase(
      name: "request from an older term is ignored", requestTerm: 2, outcome: .ignored, termAfter: 3,
      voteAfter: nil),
    VoteCase(
      name: "higher term updates the term and frees the vote", vote: 3, requestTerm: 4, outcome: .granted,
      termAfter: 4, voteAfter: 2, responseTerm: 4),
    VoteCase(
      name: "pre-vote for the next term is granted without changing term or vote", vote: 3, requestTerm: 4,
      isPreVote: true, outcome: .granted, termAfter: 3, voteAfter: 3, responseTerm: 4),
    VoteCase(
      name: "pre-vote from a less up-to-date log is refused", requestTerm: 4, lastLogIndex: 2,
      isPreVote: true,
      outcome: .rejected, termAfter: 3, voteAfter: nil, responseTerm: 3),
    VoteCase(
      name: "pre-vote for the current term after voting for another is refused", vote: 3, requestTerm: 3,
      isPreVote: true, outcome: .rejected, termAfter: 3, voteAfter: 3, responseTerm: 3),
    VoteCase(
      name: "pre-vote from an older term is refused", requestTerm: 2, lastLogIndex: 2, lastLogTerm: 2,
      isPreVote: true, outcome: .rejected,
      termAfter: 3, voteAfter: nil, responseTerm: 3),
  ]
}

@Suite struct VotingTests {
  /// §5.2, §5.4.1, thesis §9.6: one vote per term, only for an up-to-date log; pre-votes change nothing.
  @Test(arguments: VoteCase.all)
  func voteRequestIsAnsweredByTheRules(_ rule: VoteCase) throws {
    // Check-quorum off: the leader lease is a separate rule (CheckQuorumTests).
    let node = makeNode(
      1, stored: storedState(voters: [1, 2, 3], term: rule.term, vote: rule.vote, logTerms: [2, 3])
    ) {
      $0.checkQuorum = false
    }
    let request = VoteRequest(
      isPreVote: rule.isPreVote, lastLogIndex: rule.lastLogIndex, lastLogTerm: rule.lastLogTerm,
      isLeadershipTransfer: false)
    node.step(Message(from: NodeID(2), to: NodeID(1), term: rule.requestTerm, body: .voteRequest(request)))
    let ready = node.takeReady()

    #expect(node.currentTerm == rule.termAfter)
    #expect(node.status.vote == rule.voteAfter.map(NodeID.init))
    let early = ready.messages.filter { $0.voteResponse != nil }
    let late = ready.messagesAfterPersist.filter { $0.voteResponse != nil }
    switch rule.outcome {
    case .ignored:
      #expect(ready.messages.isEmpty && ready.messagesAfterPersist.isEmpty)
    case .rejected:
      // A refusal promises nothing, so it need not wait for the disk.
      #expect(late.isEmpty)
      try #require(early.count == 1)
      #expect(early[0].voteResponse == VoteResponse(isPreVote: rule.isPreVote, granted: false))
      #expect(early[0].term == rule.responseTerm)
    case .granted where rule.isPreVote:
      #expect(late.isEmpty)
      try #require(early.count == 1)
      #expect(early[0].voteResponse == VoteResponse(isPreVote: true, granted: true))
      #expect(early[0].term == rule.responseTerm)
      #expect(ready.hardState == nil, "a pre-vote grant must not touch durable state")
    case .granted:
      // A vote is a promise: it leaves only after the vote is on disk.
      #expect(early.isEmpty)
      try #require(late.count == 1)
      #expect(late[0].voteResponse == VoteResponse(isPreVote: false, granted: true))
      #expect(late[0].to == NodeID(2) && late[0].term == rule.responseTerm)
      if rule.vote == 2 && rule.term == rule.termAfter {
        #expect(ready.hardState == nil, "the vote is durable already")
      } else {
        #expect(ready.hardState?.vote == NodeID(2) && ready.hardState?.term == rule.termAfter)
        #expect(ready.mustSync)
      }
    }
    if rule.termAfter != rule.term {
      #expect(ready.hardState?.term == rule.termAfter && ready.mustSync, "a new term must be synced")
    }
  }

  /// §5.2: a candidate's own vote request (and the term it bumped) is sent only once durable.
  @Test func candidateSendsVoteRequestsOnlyAfterPersistingItsVote() {
    let node = makeNode(1, stored: storedState(voters: [1, 2, 3], term: 1)) { $0.preVote = false }
    while node.currentRole != .candidate { node.tick() }
    let ready = node.takeReady()
    #expect(ready.hardState == HardState(term: 2, vote: NodeID(1), commit: 0))
    #expect(ready.mustSync)
    #expect(!ready.messages.contains { $0.isVoteTraffic })
    #expect(ready.messagesAfterPersist.filter(\.isRealVoteRequest).map(\.to) == ids([2, 3]))
  }
}
