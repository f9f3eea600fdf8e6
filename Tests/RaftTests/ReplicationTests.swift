import Testing

@_spi(Testing) @testable import Raft

/// A follower (node 2) whose log is 1@1 2@1 3@2 4@2 5@3, and the answer expected to one append.
struct AppendCheckCase: Sendable, CustomTestStringConvertible {
  var prevLogIndex: UInt64
  var prevLogTerm: UInt64
  /// nil when the append must be accepted.
  var hint: LogPosition?

  var testDescription: String {
    "prev \(prevLogIndex)@\(prevLogTerm) -> " + (hint.map { "reject, hint \($0)" } ?? "accept")
  }

  static let all: [AppendCheckCase] = [
    AppendCheckCase(prevLogIndex: 7, prevLogTerm: 3, hint: LogPosition(index: 5, term: 3)),  // beyond the log
    AppendCheckCase(prevLogIndex: 5, prevLogTerm: 2, hint: LogPosition(index: 4, term: 2)),  // skips term 3
    AppendCheckCase(prevLogIndex: 5, prevLogTerm: 4, hint: LogPosition(index: 5, term: 3)),
    AppendCheckCase(prevLogIndex: 5, prevLogTerm: 1, hint: LogPosition(index: 2, term: 1)),  // skips 2 terms
    AppendCheckCase(prevLogIndex: 4, prevLogTerm: 2, hint: nil),
    AppendCheckCase(prevLogIndex: 5, prevLogTerm: 3, hint: nil),
  ]
}

/// Logs for the fast back-off scenario: index 1 is the bootstrap entry, these follow from index 2.
struct DivergenceCase: Sendable, CustomTestStringConvertible {
  var name: String
  var leaderTerms: [UInt64]
  var followerTerms: [UInt64]
  var testDescription: String { name }

  static let all: [DivergenceCase] = [
    DivergenceCase(
      name: "50 stale entries, shorter leader", leaderTerms: Array(repeating: 3, count: 10),
      followerTerms: Array(repeating: 2, count: 50)),
    DivergenceCase(
      name: "50 stale entries, longer leader", leaderTerms: Array(repeating: 3, count: 60),
      followerTerms: Array(repeating: 2, count: 50)),
    DivergenceCase(
      name: "common prefix then 50 stale entries",
      leaderTerms: Array(repeating: 2, count: 5) + Array(repeating: 4, count: 30),
      followerTerms: Array(repeating: 2, count: 5) + Array(repeating: 3, count: 50)),
    DivergenceCase(
      name: "stale entries of several terms",
      leaderTerms: Array(repeating: 2, count: 10) + Array(repeating: 6, count: 40),
      followerTerms: Array(repeating: 2, count: 10) + Array(repeating: 3, count: 10)
        + Array(repeating: 4, count: 10)
        + Array(repeating: 5, count: 20)),
    DivergenceCase(
      name: "follower missing 50 entries", leaderTerms: Array(repeating: 3, count: 50), followerTerms: []),
  ]
}

@Suite struct ReplicationTests {
  /// §5.1/§5.3: only the leader appends; others refuse and name the leader so clients can redirect.
  @Test func proposalsOnAFollowerNameTheLeader() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    #expect(throws: ProposalError.notLeader(leader: nil)) { try cluster[2].propose([1]) }
    try #require(cluster.electLeader(1))
    let lastIndex = cluster[2].lastIndex
    #expect(throws: ProposalError.notLeader(leader: NodeID(1))) { try cluster[2].propose([1]) }
    #expect(throws: ProposalError.notLeader(leader: NodeID(1))) {
      try cluster[3].propose(batch: [[1], [2]])
    }
    #expect(cluster[2].lastIndex == lastIndex && !cluster[2].hasReady)
  }

  /// etcd batching: everything proposed between two Readies travels in one append per follower.
  @Test func proposalsBetweenReadiesTravelInOneAppendPerFollower() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let first = try cluster[1].propose(Array("a".utf8))
    for text in ["b", "c", "d", "e"] { try cluster[1].propose(Array(text.utf8)) }
    cluster.drain(1)

    for follower: UInt64 in [2, 3] {
      let appends = cluster.mailbox.compactMap { $0.to == NodeID(follower) ? $0.appendEntries : nil }
      #expect(appends.count == 1, "follower \(follower)")
      #expect(appends.first?.entries.map(\.index) == Array(first.index...(first.index + 4)))
    }
    #expect(cluster.mailbox.count == 2)
    cluster.stabilize()
    #expect(cluster.appliedCommands(2) == ["a", "b", "c", "d", "e"])
  }

  /// Thesis §10.2 flow control: at most maxInflightMessages unacknowledged appends per follower.
  @Test func replicatePipelineIsBoundedByMaxInflightMessages() throws {
    let cluster = TestCluster(voters: [1, 2, 3]) {
      $0.maxInflightMessages = 2
      $0.maxMessageBytes = 25  // one 1-byte command per append
    }
    try #require(cluster.electLeader(1))
    #expect(cluster[1].status.followers.allSatisfy { $0.state == "replicate" })
    for k in 0..<10 { try cluster[1].propose([UInt8(k)]) }
    cluster.drain(1)

    func appends(to raw: UInt64) -> [AppendEntries] {
      cluster.mailbox.compactMap { $0.to == NodeID(raw) ? $0.appendEntries : nil }
    }
    #expect(appends(to: 2).count == 2 && appends(to: 3).count == 2)
    #expect(appends(to: 2).allSatisfy { $0.entries.count == 1 })

    // Delivering the appends frees nothing; each acknowledgement frees exactly one slot.
    cluster.deliver { $0.to == NodeID(2) && $0.appendEntries != nil }
    #expect(appends(to: 2).isEmpty)
    cluster.deliver(where: { $0.from == NodeID(2) && $0.isAcceptedAppend }, limit: 1)
    #expect(appends(to: 2).count == 1)
    #expect(appends(to: 3).count == 2)
    #expect(cluster[1].status.followers.map(\.inflightMessages) == [2, 2])

    cluster.stabilize()
    #expect(cluster[2].lastIndex == cluster[1].lastIndex && cluster[3].commitIndex == cluster[1].lastIndex)
  }

  /// etcd flow control: proposals are refused while the uncommitted tail exceeds maxUncommittedBytes.
  @Test func proposalsAreRefusedWhileTooMuchIsUncommitted() throws {
    let cluster = TestCluster(voters: [1, 2, 3]) {
      $0.maxUncommittedBytes = 100
      $0.maxMessageBytes = 100
    }
    try #require(cluster.electLeader(1))
    cluster.isolated = [NodeID(2), NodeID(3)]
    try cluster.propose(1, String(repeating: "x", count: 50))  // 74 bytes counted
    try cluster.propose(1, "y")  // 99
    let lastIndex = cluster[1].lastIndex
    #expect(throws: ProposalError.overloaded) { try cluster[1].propose(Array("z".utf8)) }
    #expect(cluster[1].lastIndex == lastIndex, "a refused proposal appends nothing")

    cluster.isolated = []
    for _ in 0..<5 {
      cluster.tick(1)
      cluster.deliver()
    }
    #expect(cluster[1].commitIndex == lastIndex)
    #expect(throws: Never.self) { try cluster.propose(1, "z") }
  }

  /// A single entry that cannot fit in one append could never be replicated, so it is refused.
  @Test(arguments: [(76, true), (77, false), (500, false)] as [(Int, Bool)])
  func entriesLargerThanAMessageAreRefused(size: Int, accepted: Bool) throws {
    let cluster = TestCluster(voters: [1]) { $0.maxMessageBytes = 100 }
    try #require(cluster.electLeader(1))
    let command = [UInt8](repeating: 7, count: size)
    if accepted {
      #expect(throws: Never.self) { try cluster[1].propose(command) }
    } else {
      #expect(throws: ProposalError.entryTooLarge(bytes: size, limit: 76)) { try cluster[1].propose(command) }
      #expect(throws: ProposalError.entryTooLarge(bytes: size, limit: 76)) {
        try cluster[1].propose(batch: [[1], command])
      }
      #expect(cluster[1].lastIndex == 2, "nothing of a refused batch is appended")
    }
  }

  /// §5.3 (Log Matching): a follower refuses an append whose previous entry it lacks, hinting where to retry.
  @Test(arguments: AppendCheckCase.all)
  func followerChecksThePreviousEntry(_ check: AppendCheckCase) throws {
    let node = makeNode(2, stored: storedState(voters: [1, 2, 3], term: 3, logTerms: [1, 2, 2, 3]))
    let entry = LogEntry(index: check.prevLogIndex + 1, term: 4, data: [9])
    let append = AppendEntries(
      prevLogIndex: check.prevLogIndex, prevLogTerm: check.prevLogTerm, entries: [entry], leaderCommit: 0)
    node.step(Message(from: NodeID(1), to: NodeID(2), term: 4, body: .appendEntries(append)))
    let ready = node.takeReady()
    let responses = (ready.messages + ready.messagesAfterPersist).compactMap(\.appendResponse)

    if let hint = check.hint {
      #expect(
        responses == [
          .rejected(rejectedIndex: check.prevLogIndex, hintIndex: hint.index, hintTerm: hint.term)
        ])
      #expect(ready.entries.isEmpty)
      #expect(node.lastIndex == 5, "a rejected append changes nothing in the log")
    } else {
      #expect(responses == [.accepted(matchIndex: check.prevLogIndex + 1)])
      #expect(ready.entries == [entry])
      #expect(node.lastIndex == check.prevLogIndex + 1, "the conflicting suffix is replaced")
    }
    #expect(node.knownLeader == NodeID(1) && node.currentTerm == 4)
  }

  /// §5.3 (optimization): the leader skips a whole term of conflicts per round trip, not one entry.
  @Test(arguments: DivergenceCase.all)
  func leaderFindsTheDivergencePointInFewRoundTrips(_ divergence: DivergenceCase) throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    let term = UInt64(7)
    cluster.install(1, term: term, logTerms: divergence.leaderTerms)
    cluster.install(2, term: term, logTerms: divergence.leaderTerms)
    cluster.install(3, term: term, logTerms: divergence.followerTerms)
    var rejections = 0
    cluster.dropRule = { message in
      if message.from == NodeID(3) && message.isRejectedAppend { rejections += 1 }
      return false
    }
    try #require(cluster.electLeader(1))

    #expect(rejections <= 2, "\(rejections) rejections")
    #expect(cluster.logTerms(3) == cluster.logTerms(1))
    #expect(cluster[3].commitIndex == cluster[1].lastIndex)
  }

  /// Thesis §10.2.1: the leader may send before its own write is durable, but counts itself only once it is.
  @Test func leaderCountsItsOwnEntriesOnlyOnceTheyAreDurable() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    cluster.isolated = [NodeID(3)]  // 1 and 2 are the only possible majority
    let commitBefore = cluster[1].commitIndex
    let position = try cluster[1].propose(Array("a".utf8))

    let ready = cluster[1].takeReady()
    #expect(ready.entries.map(\.position) == [position])
    #expect(
      ready.messages.contains { $0.to == NodeID(2) && $0.appendEntries?.entries.last?.position == position })
    cluster.mailbox.append(contentsOf: ready.messages)
    cluster.deliver()
    #expect(cluster[2].lastIndex == position.index, "the follower has it durably")
    #expect(cluster[1].commitIndex == commitBefore, "the leader's own copy is not durable yet")

    cluster[1].persisted(through: try #require(ready.persistedThrough))
    #expect(cluster[1].commitIndex == position.index)
  }

  /// §5.3: a leader's heartbeat never lets a follower commit beyond what it is known to match.
  @Test func heartbeatCommitIsCappedAtTheFollowersMatch() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    cluster.dropRule = { $0.to == NodeID(3) && $0.appendEntries != nil }
    try cluster.propose(1, "a")
    cluster.deliver()
    #expect(cluster[1].commitIndex == 3)
    cluster.tick(1)
    let heartbeats = cluster.mailbox.filter { $0.isHeartbeat }
    let commits = heartbeats.map { message -> UInt64 in
      if case .heartbeat(let heartbeat) = message.body { return heartbeat.commit }
      return 0
    }
    #expect(zip(heartbeats.map(\.to), commits).map { "\($0)=\($1)" } == ["n2=3", "n3=2"])
  }

  /// etcd progress: lost pipelined appends show as three heartbeat answers without progress, so probe again.
  @Test func stalledPipelineFallsBackToProbing() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    cluster.dropRule = { $0.to == NodeID(3) && $0.appendEntries != nil }
    for k in 0..<3 { try cluster.propose(1, "w\(k)") }
    cluster.deliver()
    cluster.dropRule = nil
    func state() -> String? { cluster[1].status.followers.first { $0.id == NodeID(3) }?.state }
    #expect(state() == "replicate")

    var answers = 0
    cluster.readyObserver = { id, ready in
      if id == NodeID(3) { answers += ready.messages.filter(\.isHeartbeatResponse).count }
    }
    while state() == "replicate" && answers < 10 {
      cluster.tick(1)
      cluster.deliver { !($0.to == NodeID(1) && $0.from == NodeID(3)) || $0.isHeartbeatResponse }
    }
    #expect(answers == 3)
    cluster.stabilize()
    #expect(cluster[3].lastIndex == cluster[1].lastIndex)
  }

  /// etcd ReportUnreachable: when the transport cannot reach a follower, stop pipelining and probe.
  @Test func unreachableFollowerIsProbedInsteadOfPipelined() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    cluster[1].reportUnreachable(NodeID(3))
    #expect(cluster[1].status.followers.map(\.state) == ["replicate", "probe"])
    for k in 0..<3 { try cluster[1].propose([UInt8(k)]) }
    cluster.drain(1)
    #expect(cluster.mailboxCount { $0.to == NodeID(3) && $0.appendEntries != nil } == 1)
    cluster.stabilize()
    #expect(cluster[1].status.followers.map(\.state) == ["replicate", "replicate"])
  }
}
