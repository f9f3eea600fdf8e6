import Testing

@_spi(Testing) @testable import Raft

/// Linearizable reads without log writes: ReadIndex and leader leases (thesis §6.4, §6.4.1).
@Suite struct ReadIndexTests {
  /// Thesis §6.4 step 3: the read index is usable only after a heartbeat round shows the leader still leads.
  @Test func leaderAnswersOnlyAfterAQuorumAcknowledgesAHeartbeatRound() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    try cluster.propose(1, "a")
    cluster.stabilize()
    let commit = cluster[1].commitIndex

    cluster[1].requestRead(id: 7)
    cluster.drain(1)
    #expect(cluster.reads(1).isEmpty)
    #expect(cluster.mailboxCount(where: \.isHeartbeat) == 2, "the read opens a round at once")

    cluster.deliver(where: \.isHeartbeat)
    #expect(cluster.reads(1).isEmpty, "heartbeats delivered, but no answer back yet")
    cluster.deliver(where: \.isHeartbeatResponse, limit: 1)
    #expect(cluster.reads(1) == [ReadState(requestID: 7, result: .ready(index: commit))])
    cluster.stabilize()
    #expect(cluster.reads(1).count == 1, "answered exactly once")
  }

  /// Thesis §6.4: a leader that cannot reach a majority never confirms a read (it fails once it steps down).
  @Test(arguments: [true, false])
  func isolatedLeaderNeverAnswersReads(checkQuorum: Bool) throws {
    let cluster = TestCluster(voters: [1, 2, 3]) { $0.checkQuorum = checkQuorum }
    try #require(cluster.electLeader(1))
    cluster.isolated = [NodeID(1)]
    cluster[1].requestRead(id: 1)
    cluster[1].requestRead(id: 2, mode: .lease)
    for _ in 0..<60 {
      cluster.tick(1)
      cluster.deliver()
    }
    #expect(!cluster.reads(1).contains { if case .ready = $0.result { true } else { false } })
    if checkQuorum {
      #expect(!cluster[1].isLeader)
      #expect(
        cluster.reads(1) == [
          ReadState(requestID: 1, result: .failed(.leadershipLost)),
          ReadState(requestID: 2, result: .failed(.leadershipLost)),
        ])
    } else {
      #expect(cluster.reads(1).isEmpty)
    }
  }

  /// Thesis §6.4: a follower asks the leader for the read index and serves at the leader's commit index.
  @Test func followerReadIsForwardedAndAnsweredWithTheLeadersCommitIndex() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    // "b" commits on 1 and 2; follower 3 has not heard of it yet.
    cluster.dropRule = { $0.to == NodeID(3) }
    try cluster.propose(1, "b")
    cluster.deliver()
    cluster.dropRule = nil
    let leaderCommit = cluster[1].commitIndex
    #expect(cluster[3].commitIndex < leaderCommit)

    cluster[3].requestRead(id: 5)
    cluster.drain(3)
    #expect(cluster.mailbox.filter(\.isReadIndexRequest).map(\.to) == [NodeID(1)])
    cluster.stabilize()
    #expect(cluster.reads(3) == [ReadState(requestID: 5, result: .ready(index: leaderCommit))])
  }

  /// Thesis §6.4 step 1: a new leader's commit index may lag, so reads wait until its no-op commits.
  @Test func newLeaderAnswersReadsOnlyOnceItsNoopCommits() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    // "a" (index 3) commits, but only 2 learns that; 3 still thinks the commit index is 2.
    let a = try cluster.propose(1, "a")
    cluster.deliver { $0.appendEntries != nil }
    cluster.deliver(where: \.isAcceptedAppend)  // the leader commits and sends the new commit index
    cluster.discard { $0.to == NodeID(3) }
    cluster.deliver()
    #expect(cluster[1].commitIndex == a.index && cluster[3].commitIndex == a.index - 1)

    cluster.isolated = [NodeID(1)]
    try #require(cluster.campaign(3, expiring: [2], deliver: \.isVoteTraffic))
    #expect(cluster[3].commitIndex == a.index - 1)
    cluster[3].requestRead(id: 9)
    cluster.drain(3)
    #expect(cluster.reads(3).isEmpty, "answering now would miss the committed entry \(a.index)")
    #expect(!cluster.mailbox.contains { $0.isHeartbeat })

    cluster.stabilize()
    #expect(cluster.reads(3) == [ReadState(requestID: 9, result: .ready(index: a.index + 1))])
  }

  /// Thesis §6.4.1: a lease read is answered at once within the lease and falls back to a round after it.
  @Test(arguments: [0, 7, 8, 15])
  func leaseReadsAreLocalOnlyWhileTheLeaseHolds(ticksWithoutContact: Int) throws {
    let cluster = TestCluster(voters: [1, 2, 3])  // lease = 10 - 2 ticks after the round was sent
    try #require(cluster.electLeader(1))
    cluster.tick(1)  // one acknowledged round starts the lease
    cluster.deliver()
    for _ in 0..<ticksWithoutContact {
      cluster.tick(1)
      cluster.discard()
    }
    let commit = cluster[1].commitIndex
    cluster[1].requestRead(id: 3, mode: .lease)
    cluster.drain(1)

    let expected = [ReadState(requestID: 3, result: .ready(index: commit))]
    if ticksWithoutContact < 8 {
      #expect(cluster.reads(1) == expected)
      #expect(!cluster.mailbox.contains { $0.isHeartbeat }, "no round needed")
    } else {
      #expect(cluster.reads(1).isEmpty)
      #expect(cluster.mailboxCount(where: \.isHeartbeat) == 2)
      cluster.deliver()
      #expect(cluster.reads(1) == expected)
    }
  }

  /// Thesis §6.4: reads waiting on a leader that loses leadership fail so the client retries elsewhere.
  @Test func pendingReadsFailWhenTheLeaderStepsDown() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    let term = cluster[1].currentTerm
    cluster[1].requestRead(id: 1)
    cluster[2].requestRead(id: 2)
    cluster.drain(2)
    cluster.deliver { $0.isReadIndexRequest }
    cluster.discard()
    #expect(cluster.reads(1).isEmpty)

    let heartbeat = Heartbeat(commit: 0, readRound: 0)
    cluster[1].step(Message(from: NodeID(3), to: NodeID(1), term: term + 1, body: .heartbeat(heartbeat)))
    cluster.drain(1)
    #expect(!cluster[1].isLeader)
    #expect(cluster.reads(1) == [ReadState(requestID: 1, result: .failed(.leadershipLost))])
    cluster.deliver { $0.to == NodeID(2) }
    #expect(cluster.reads(2) == [ReadState(requestID: 2, result: .failed(.leadershipLost))])
  }

  /// Thesis §6.4: without a known leader nobody can confirm a read.
  @Test func followerWithoutALeaderFailsReadsAtOnce() {
    let cluster = TestCluster(voters: [1, 2, 3])
    cluster[2].requestRead(id: 4)
    cluster.drain(2)
    #expect(cluster.reads(2) == [ReadState(requestID: 4, result: .failed(.noLeader))])
    #expect(cluster.mailbox.isEmpty)
  }

  /// Flow control: reads beyond maxPendingReads are refused rather than queued without bound.
  @Test func readsBeyondMaxPendingReadsAreRefused() throws {
    let cluster = TestCluster(voters: [1, 2, 3]) { $0.maxPendingReads = 2 }
    try #require(cluster.electLeader(1))
    for id: UInt64 in 1...3 { cluster[1].requestRead(id: id) }
    for id: UInt64 in 11...13 { cluster[2].requestRead(id: id) }
    cluster.drainAll()
    #expect(cluster.reads(1) == [ReadState(requestID: 3, result: .failed(.overloaded))])
    #expect(cluster.reads(2) == [ReadState(requestID: 13, result: .failed(.overloaded))])

    // The leader's own two reads fill its queue, so the forwarded ones are refused there too.
    cluster.deliver { $0.isReadIndexRequest }
    cluster.deliver { $0.to == NodeID(2) && !$0.isHeartbeat }
    #expect(
      cluster.reads(2).map(\.result) == [.failed(.overloaded), .failed(.overloaded), .failed(.overloaded)])

    cluster.stabilize()
    #expect(cluster.reads(1).map(\.requestID) == [3, 1, 2])
    let commit = cluster[1].commitIndex
    #expect(cluster.reads(1).dropFirst().allSatisfy { $0.result == .ready(index: commit) })
  }

  /// Thesis §6.4.1/§4.2.3: lease reads are sound only if followers honour leases, which needs check-quorum.
  @Test(arguments: [true, false])
  func leaseReadNeverMissesAWriteCommittedBeforeIt(checkQuorum: Bool) throws {
    let cluster = TestCluster(voters: [1, 2, 3]) { $0.checkQuorum = checkQuorum }
    try #require(cluster.electLeader(1))
    // Clocks run in lockstep; 1 and 3 cannot reach each other, and 1 learns of newer terms late.
    cluster.dropRule = { [unowned cluster] message in
      message.isBetween(1, 3) || (message.to == NodeID(1) && message.term > cluster[1].currentTerm)
    }
    for _ in 0..<60 where !cluster[3].isLeader {
      cluster.tickAll()
      cluster.deliver()
    }
    if cluster[3].isLeader {
      try cluster.propose(3, "w")
      cluster.deliver()
    }
    let newestCommit = cluster.nodes.values.map(\.commitIndex).max()!
    #expect(cluster[1].isLeader, "node 1 has not heard of any newer term")

    cluster[1].requestRead(id: 1, mode: .lease)
    cluster.drain(1)
    let answers = cluster.reads(1).compactMap { state -> UInt64? in
      if case .ready(let index) = state.result { return index }
      return nil
    }
    if checkQuorum { #expect(answers.count == 1, "the lease is valid and answers at once") }
    #expect(
      answers.allSatisfy { $0 >= newestCommit }, "stale read: \(answers), newest commit \(newestCommit)")
  }

  /// Thesis §3.10/§6.4.1: transfer votes bypass leases, so a transferring leader cannot rely on its own.
  @Test func leaseReadDuringALeadershipTransferNeedsARound() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    cluster.tick(1)
    cluster.deliver()
    try cluster[1].transferLeadership(to: NodeID(2))
    cluster.drain(1)
    cluster.discard()  // hold the transfer back

    cluster[1].requestRead(id: 1, mode: .lease)
    cluster.drain(1)
    #expect(cluster.reads(1).isEmpty)
    #expect(cluster.mailboxCount { $0.isHeartbeat } == 2)
  }

  /// Thesis §3.10/§6.4.1: a late timeoutNow can win a lease-ignoring election after its transfer ended.
  @Test func leaseIsNotTrustedAgainAfterAnAbandonedTransferWhoseTimeoutNowArrivesLate() throws {
    let cluster = TestCluster(voters: [1, 2, 3])
    try #require(cluster.electLeader(1))
    // Clocks run in lockstep; node 1 only learns of newer terms late.
    cluster.dropRule = { [unowned cluster] message in
      message.to == NodeID(1) && message.term > cluster[1].currentTerm
    }
    try cluster[1].transferLeadership(to: NodeID(2))
    cluster.drain(1)
    let timeoutNow = try #require(cluster.mailbox.first { $0.isTimeoutNow })
    cluster.discard { $0.isTimeoutNow }  // delayed in the network

    for _ in 0..<9 {
      cluster.tickAll()
      cluster.deliver()
    }
    #expect(cluster[1].status.leadershipTransferTarget == NodeID(2))
    // The delayed timeoutNow arrives just before the leader gives up on the transfer.
    cluster.mailbox.append(timeoutNow)
    cluster.deliver()
    try #require(cluster[2].isLeader)
    try cluster.propose(2, "w")
    cluster.deliver()
    let newestCommit = cluster[2].commitIndex
    cluster.tickAll()
    cluster.deliver()
    #expect(cluster[1].isLeader && cluster[1].status.leadershipTransferTarget == nil)

    cluster[1].requestRead(id: 1, mode: .lease)
    cluster.drain(1)
    let answers = cluster.reads(1).compactMap { state -> UInt64? in
      if case .ready(let index) = state.result { return index }
      return nil
    }
    #expect(
      answers.allSatisfy { $0 >= newestCommit }, "stale read: \(answers), newest commit \(newestCommit)")

  }
}
