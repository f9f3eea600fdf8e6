// Validation of peers' messages at the core's boundary. The core's preconditions guard its own
// invariants; they must never be reachable from a peer's input. Everything a message could carry
// that a correct member of this group would never send is refused here, before `receive` sees it.
extension RaftNode {
  /// Why `message` must not reach the core, or nil when it may.
  func refusal(of message: Message) -> MessageRefusal? {
    guard message.to == id else { return .misaddressed }
    guard message.term <= RaftLimits.maxTerm else { return .termOutOfRange }
    guard options.plantedBugs.contains(.acceptNonMembers) || senderIsKnown(message) else {
      return .unknownSender
    }
    let maxIndex = RaftLimits.maxIndex
    switch message.body {
    case .voteRequest(let request):
      guard request.lastLogIndex <= maxIndex, request.lastLogTerm <= message.term else {
        return .indexOutOfRange
      }
    case .voteResponse, .readIndexRequest, .leaderQuery, .memberQuery:
      break
    case .appendEntries(let append):
      guard append.prevLogIndex <= maxIndex, append.leaderCommit <= maxIndex,
        append.prevLogTerm <= message.term,
        UInt64(append.entries.count) <= maxIndex - append.prevLogIndex
      else { return .indexOutOfRange }
      if let refusal = secondLeaderRefusal(message) { return refusal }
      var previousTerm = append.prevLogTerm
      for (k, entry) in append.entries.enumerated() {
        // A leader's entries are contiguous, their terms never fall, and none is newer than the
        // leader's own term.
        guard entry.index == append.prevLogIndex + 1 + UInt64(k), entry.term >= previousTerm,
          entry.term <= message.term
        else { return .impossibleEntries }
        previousTerm = entry.term
        if entry.kind == .configuration, (try? Configuration(decoding: entry.data)) == nil {
          return .impossibleEntries
        }
      }
    case .appendEntriesResponse(.accepted(let matchIndex)):
      guard matchIndex <= maxIndex else { return .indexOutOfRange }
      // A follower can only match what this leader sent, and it sent nothing beyond its log.
      if role == .leader, message.term == term, matchIndex > log.lastIndex { return .unsolicitedResponse }
    case .appendEntriesResponse(.rejected(let rejectedIndex, let hintIndex, let hintTerm)):
      guard rejectedIndex <= maxIndex, hintIndex <= maxIndex, hintTerm <= RaftLimits.maxTerm else {
        return .indexOutOfRange
      }
    case .heartbeat(let heartbeat):
      guard heartbeat.commit <= maxIndex else { return .indexOutOfRange }
      if let refusal = secondLeaderRefusal(message) { return refusal }
    case .heartbeatResponse(let response):
      // Acknowledging a round this leader never started would confirm reads it never confirmed.
      if role == .leader, message.term == term, response.readRound > reads.lastRoundSent {
        return .unsolicitedResponse
      }
    case .installSnapshot(let snapshot):
      guard snapshot.index <= maxIndex, snapshot.term <= message.term else { return .indexOutOfRange }
      if let refusal = secondLeaderRefusal(message) { return refusal }
    case .timeoutNow:
      // Only this node's leader, in its own term, may tell it to campaign.
      guard role == .follower, message.term == term, leader == message.from else {
        return .timeoutNowNotFromLeader
      }
    case .readIndexResponse:
      // Only the leader this node forwarded its reads to answers them (perhaps from a newer term,
      // when it has just stepped down).
      guard leader == message.from else { return .unsolicitedResponse }
    case .transferCheck(let check):
      guard check.campaignTerm <= RaftLimits.maxTerm else { return .termOutOfRange }
    case .transferConfirm(let nonce):
      guard let pending = pendingTransferCheck, pending.check.nonce == nonce, pending.leader == message.from
      else {
        return .unsolicitedResponse
      }
    case .leaderHint(let hinted):
      // Only a member of this node's configuration may vouch for a leader.
      guard log.configurations.latest.contains(message.from), hinted != id else { return .unknownSender }
    }
    return nil
  }

  /// Whether a message may come from its sender: a member of the newest configuration, or this
  /// node's current leader. Two more senders are accepted, each vouched for by something other than
  /// the sender's own word:
  /// - while this node is outside its own configuration (joining), the members it was told of when
  ///   it asked to join (`trustWhileJoining`);
  /// - a leader or candidate its configuration does not list yet (the configuration lags: it missed
  ///   the entry that added that peer), once a member of its configuration has named it
  ///   (`leaderHint`, unprompted or answering a `memberQuery`).
  /// A node that knows nobody accepts nobody.
  private func senderIsKnown(_ message: Message) -> Bool {
    let configuration = log.configurations.latest
    if configuration.contains(message.from) || message.from == leader { return true }
    if !configuration.contains(id), joinTrust.contains(message.from) { return true }
    if let vouched = vouchedLeader, vouched.id == message.from,
      message.body.isFromLeader || message.body.isVoteRequest, message.term >= vouched.term
    {
      return true
    }
    return false
  }

  /// Senders outside the configuration this node accepts now (see `senderIsKnown`): the transport
  /// admits their connections too.
  public var trustedPeersOutsideConfiguration: Set<NodeID> {
    var trusted: Set<NodeID> = log.configurations.latest.contains(id) ? [] : joinTrust
    if let vouched = vouchedLeader { trusted.insert(vouched.id) }
    if let leader { trusted.insert(leader) }
    trusted.subtract(log.configurations.latest.members.map(\.id))
    return trusted
  }

  /// Tells a node that is about to join which members it may hear from before the configuration
  /// reaches it (the members a seed reported when asked).
  public func trustWhileJoining(_ members: some Sequence<NodeID>) {
    joinTrust = Set(members)
    joinTrust.remove(id)
    trustVersion &+= 1
  }

  /// A leader's message in this node's own term must come from the one leader of that term.
  private func secondLeaderRefusal(_ message: Message) -> MessageRefusal? {
    guard message.term == term else { return nil }
    if role == .leader { return .secondLeader }
    if role == .follower, let leader, leader != message.from { return .secondLeader }
    return nil
  }
}

extension Message.Body {
  /// Appends, heartbeats and snapshots: what only a leader sends.
  var isFromLeader: Bool {
    switch self {
    case .appendEntries, .heartbeat, .installSnapshot: true
    default: false
    }
  }

  var isVoteRequest: Bool {
    if case .voteRequest = self { return true }
    return false
  }
}
