// Linearizable reads without writing to the log: ReadIndex and leader leases (thesis §6.4).
struct ReadTracker {
  struct Pending {
    var requestID: UInt64
    var requester: NodeID
    var mode: ReadMode
    /// The commit index when the read arrived: serving at or after it is linearizable.
    var index: UInt64 = 0
    /// The heartbeat round whose quorum acknowledgement confirms this read.
    var round: UInt64 = 0
  }

  /// Leader: reads that arrived before the leader committed an entry of its own term (until then
  /// its commit index may be behind the cluster's).
  var awaitingTermCommit: [Pending] = []
  /// Leader: reads waiting for their round, in round order.
  var awaitingRound: [Pending] = []
  var lastRoundSent: UInt64 = 0
  var confirmedRound: UInt64 = 0
  /// Leader: the tick at which `confirmedRound` was sent (nil before a quorum acknowledged a round
  /// in this term), for `quorumContactAgeTicks`.
  var confirmedRoundSentTick: UInt64?
  var roundNeeded = false
  /// Tick at which recent rounds were sent, indexed by `round % count`, for the lease.
  var roundSentTicks = [(round: UInt64, tick: UInt64)](repeating: (0, 0), count: 32)
  /// Leader: lease reads are answered locally until this tick.
  var leaseExpiresAtTick: UInt64 = 0
  /// Leader: set once this leader sent TimeoutNow in its term. Such a message may arrive late, after
  /// the transfer was abandoned, and start an election that ignores followers' leases — so from then
  /// on this term's reads all take a ReadIndex round.
  var leaseRevoked = false
  /// Follower: reads forwarded to the leader, with a sequence number to fail them in order.
  var forwarded: [UInt64: UInt64] = [:]
  var forwardedSequence: UInt64 = 0

  var pendingCount: Int { awaitingTermCommit.count + awaitingRound.count + forwarded.count }

  mutating func resetForNewTerm() {
    precondition(awaitingTermCommit.isEmpty && awaitingRound.isEmpty)
    lastRoundSent = 0
    confirmedRound = 0
    confirmedRoundSentTick = nil
    roundNeeded = false
    leaseExpiresAtTick = 0
    leaseRevoked = false
  }

  mutating func startRound(atTick tick: UInt64) -> UInt64 {
    lastRoundSent += 1
    roundNeeded = false
    roundSentTicks[Int(lastRoundSent % UInt64(roundSentTicks.count))] = (lastRoundSent, tick)
    return lastRoundSent
  }

  func sentTick(ofRound round: UInt64) -> UInt64? {
    let slot = roundSentTicks[Int(round % UInt64(roundSentTicks.count))]
    return slot.round == round ? slot.tick : nil
  }
}

extension RaftNode {
  /// Asks for a read index. The answer arrives as a `ReadState` with the same `requestID` in a
  /// later `Ready`: serve the read once the state machine has applied through its index. On a
  /// follower the request is forwarded to the leader. Request ids must be unique per node among
  /// reads in flight.
  public func requestRead(id requestID: UInt64, mode: ReadMode = .readIndex) {
    defer { checkInvariants() }
    guard reads.pendingCount < options.maxPendingReads else {
      pendingReadStates.append(ReadState(requestID: requestID, result: .failed(.overloaded)))
      return
    }
    if role == .leader {
      leaderRead(ReadTracker.Pending(requestID: requestID, requester: id, mode: mode))
      return
    }
    guard let leader, role == .follower, reads.forwarded[requestID] == nil else {
      pendingReadStates.append(ReadState(requestID: requestID, result: .failed(.noLeader)))
      return
    }
    reads.forwardedSequence += 1
    reads.forwarded[requestID] = reads.forwardedSequence
    send(to: leader, .readIndexRequest(ReadIndexRequest(requestID: requestID, mode: mode)))
  }

  func leaderRead(_ request: ReadTracker.Pending) {
    var read = request
    guard committedInCurrentTerm else {
      reads.awaitingTermCommit.append(read)
      return
    }
    read.index = log.committed
    let configuration = log.configurations.latest
    let aloneInQuorum = configuration.quorum == 1 && configuration.isVoter(id)
    // Followers honour a lease only under check-quorum (see `inLease`).
    let leaseHolds =
      read.mode == .lease && options.checkQuorum && !reads.leaseRevoked && transferTarget == nil
      && ticks < reads.leaseExpiresAtTick
    if aloneInQuorum || leaseHolds || options.plantedBugs.contains(.readIndexWithoutHeartbeat) {
      answerRead(read, .ready(index: read.index))
      return
    }
    read.round = reads.lastRoundSent + 1
    reads.awaitingRound.append(read)
    reads.roundNeeded = true
  }

  func answerRead(_ read: ReadTracker.Pending, _ result: ReadResult) {
    if read.requester == id {
      pendingReadStates.append(ReadState(requestID: read.requestID, result: result))
    } else {
      send(
        to: read.requester, .readIndexResponse(ReadIndexResponse(requestID: read.requestID, result: result)))
    }
  }

  func releaseReadsAwaitingTermCommit() {
    let waiting = reads.awaitingTermCommit
    reads.awaitingTermCommit = []
    for read in waiting { leaderRead(read) }
  }

  /// Confirms every read whose round a quorum of voters has acknowledged, and extends the lease.
  func confirmReads() {
    guard role == .leader else { return }
    let configuration = log.configurations.latest
    guard configuration.voterCount > 0 else { return }
    let rounds = configuration.voters.map { voter in
      voter == id ? reads.lastRoundSent : progress[progressIndex(of: voter)!].ackedReadRound
    }
    let confirmed = Quorum.agreedValue(rounds, quorum: configuration.quorum)
    guard confirmed > reads.confirmedRound else { return }
    reads.confirmedRound = confirmed
    if let sentTick = reads.sentTick(ofRound: confirmed) {
      reads.confirmedRoundSentTick = sentTick
      // Followers that acknowledged this round refuse votes for an election timeout after they
      // received it, which was no earlier than when it was sent.
      let expiry = sentTick + UInt64(options.electionTimeoutTicks - options.leaseSafetyMarginTicks)
      reads.leaseExpiresAtTick = max(reads.leaseExpiresAtTick, expiry)
    }
    let ready = reads.awaitingRound.prefix { $0.round <= confirmed }.count
    guard ready > 0 else { return }
    for read in reads.awaitingRound[..<ready] { answerRead(read, .ready(index: read.index)) }
    reads.awaitingRound.removeFirst(ready)
  }

  func handleReadIndexRequest(from requester: NodeID, _ request: ReadIndexRequest) {
    let read = ReadTracker.Pending(requestID: request.requestID, requester: requester, mode: request.mode)
    guard role == .leader else {
      answerRead(read, .failed(.leadershipLost))
      return
    }
    guard reads.pendingCount < options.maxPendingReads else {
      answerRead(read, .failed(.overloaded))
      return
    }
    leaderRead(read)
  }

  func handleReadIndexResponse(from peer: NodeID, _ response: ReadIndexResponse) {
    guard reads.forwarded.removeValue(forKey: response.requestID) != nil else { return }
    pendingReadStates.append(ReadState(requestID: response.requestID, result: response.result))
  }

  /// Fails every read this node is waiting on, in arrival order (deterministically).
  func failPendingReads(_ reason: ReadFailure) {
    for read in reads.awaitingTermCommit + reads.awaitingRound {
      answerRead(read, .failed(.leadershipLost))
    }
    reads.awaitingTermCommit = []
    reads.awaitingRound = []
    for (requestID, _) in reads.forwarded.sorted(by: { $0.value < $1.value }) {
      pendingReadStates.append(ReadState(requestID: requestID, result: .failed(reason)))
    }
    reads.forwarded = [:]
  }
}
