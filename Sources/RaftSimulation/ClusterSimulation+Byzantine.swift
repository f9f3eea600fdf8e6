@_spi(Testing) import Raft

/// The byzantine peer: it sends the honest nodes random messages, genuine messages replayed, and
/// genuine messages mutated, under forged senders. Every message goes through the receiver's
/// `step`, as a peer's frame does in the server, so the validation at the core's boundary is what is
/// tested: the honest nodes must neither trap nor (for an outsider) lose safety.
extension ClusterSimulation {
  static let recentMessagesCapacity = 64
  /// Ids no configuration ever holds (members are 1...nodeCount + spareNodes).
  static let outsiderIDs = (0..<4).map { NodeID(UInt64(1_000_000 + $0)) }

  func remember(_ message: Message) {
    if case .installSnapshot = message.body { return }  // Needs a snapshot stream; see below.
    if recentMessages.count < Self.recentMessagesCapacity {
      recentMessages.append(message)
    } else {
      recentMessages[recentMessagesNext] = message
      recentMessagesNext = (recentMessagesNext + 1) % Self.recentMessagesCapacity
    }
  }

  func sendByzantineMessage() throws(Violation) {
    guard let mode = options.byzantine else { return }
    let up = nodes.filter(\.isUp)
    guard let target = pick(up), let raft = target.raft else { return }
    let message: Message
    switch random(3) {
    case 0:
      // A replay: a genuine message delivered again, later (what a recording attacker can do).
      guard let original = pick(recentMessages), let replayTarget = slotByID[original.to].map({ nodes[$0] }),
        let replayRaft = replayTarget.raft
      else { return }
      try deliverByzantine(original, to: replayTarget, replayRaft)
      return
    case 1:
      guard let original = pick(recentMessages) else { return }
      message = mutate(original, to: target.id, mode: mode)
    default:
      message = randomMessage(to: target.id, mode: mode, near: raft)
    }
    try deliverByzantine(message, to: target, raft)
  }

  private func deliverByzantine(_ message: Message, to target: SimulatedNode, _ raft: RaftNode)
    throws(Violation)
  {
    report.byzantineMessages += 1
    record(.note("byzantine \(message)"))
    if target.group?.step(message) != nil { report.byzantineRefused += 1 }
    try process(target)
  }

  private func forgedSender(excluding target: NodeID, mode: ByzantineMode) -> NodeID {
    if mode == .spoofer, chance(0.5), let member = pick(nodes.map(\.id).filter { $0 != target }) {
      return member
    }
    return pick(Self.outsiderIDs)!
  }

  /// A term near the cluster's, or one no correct peer could send.
  private func forgedTerm(near term: UInt64) -> UInt64 {
    switch random(8) {
    case 0: return UInt64.max
    case 1: return RaftLimits.maxTerm &+ random(3)
    case 2: return UInt64(Int64.max)
    case 3: return term &- min(term, random(3))
    default: return term &+ random(3)
    }
  }

  private func forgedIndex(near index: UInt64) -> UInt64 {
    switch random(8) {
    case 0: return UInt64.max
    case 1: return 1_000_000_000_000
    case 2: return RaftLimits.maxIndex &+ random(2)
    case 3: return 0
    default: return index &+ random(5) &- min(index, random(5))
    }
  }

  private func mutate(_ original: Message, to target: NodeID, mode: ByzantineMode) -> Message {
    var message = original
    message.from = forgedSender(excluding: target, mode: mode)
    message.to = target
    if chance(0.5) { message.term = forgedTerm(near: original.term) }
    switch message.body {
    case .appendEntries(var append):
      if chance(0.5) { append.leaderCommit = forgedIndex(near: append.leaderCommit) }
      // Rewrite the entries: new data at a newer term, the shape a forged "rewrite" takes.
      let entryTerm = chance(0.8) ? message.term : forgedTerm(near: message.term)
      append.entries = append.entries.map {
        LogEntry(
          index: $0.index, term: entryTerm, kind: $0.kind == .configuration ? .command : $0.kind,
          data: [0xBA, 0xD0])
      }
      if chance(0.2) { append.prevLogIndex = forgedIndex(near: append.prevLogIndex) }
      message.body = .appendEntries(append)
    case .appendEntriesResponse(.accepted(let match)):
      message.body = .appendEntriesResponse(.accepted(matchIndex: forgedIndex(near: match)))
    case .appendEntriesResponse(.rejected(let rejected, let hint, let hintTerm)):
      message.body = .appendEntriesResponse(
        .rejected(
          rejectedIndex: forgedIndex(near: rejected), hintIndex: forgedIndex(near: hint),
          hintTerm: forgedTerm(near: hintTerm)))
    case .heartbeat(var heartbeat):
      heartbeat.commit = forgedIndex(near: heartbeat.commit)
      message.body = .heartbeat(heartbeat)
    case .heartbeatResponse(var response):
      response.readRound = forgedIndex(near: response.readRound)
      message.body = .heartbeatResponse(response)
    case .voteRequest(var request):
      request.isLeadershipTransfer = chance(0.5)
      request.lastLogIndex = forgedIndex(near: request.lastLogIndex)
      request.lastLogTerm = forgedTerm(near: request.lastLogTerm)
      message.body = .voteRequest(request)
    case .readIndexResponse(var response):
      response.result = .ready(index: forgedIndex(near: 0))
      message.body = .readIndexResponse(response)
    case .transferConfirm(let nonce):
      message.body = .transferConfirm(nonce: chance(0.5) ? nonce : random(1 << 32))
    case .transferCheck(var check):
      check.candidate = chance(0.5) ? message.from : check.candidate
      message.body = .transferCheck(check)
    case .leaderHint:
      message.body = .leaderHint(leader: pick(Self.outsiderIDs)!)
    case .memberQuery:
      message.body = .memberQuery(candidate: pick(Self.outsiderIDs)!)
    case .voteResponse, .installSnapshot, .timeoutNow, .readIndexRequest, .leaderQuery:
      break
    }
    return message
  }

  private func randomMessage(to target: NodeID, mode: ByzantineMode, near raft: RaftNode) -> Message {
    let from = forgedSender(excluding: target, mode: mode)
    let term = forgedTerm(near: raft.currentTerm)
    let index = forgedIndex(near: raft.lastIndex)
    let body: Message.Body
    switch random(11) {
    case 0:
      body = .voteRequest(
        VoteRequest(
          isPreVote: chance(0.5), lastLogIndex: index, lastLogTerm: forgedTerm(near: raft.currentTerm),
          isLeadershipTransfer: chance(0.5)))
    case 1: body = .voteResponse(VoteResponse(isPreVote: chance(0.5), granted: true))
    case 2:
      let count = Int(random(3))
      let prev = min(index, RaftLimits.maxIndex)
      let entries = (0..<count).map {
        LogEntry(index: prev &+ 1 &+ UInt64($0), term: term, kind: .command, data: [0xBA, 0xD1])
      }
      body = .appendEntries(
        AppendEntries(
          prevLogIndex: prev, prevLogTerm: raft.term(at: prev) ?? forgedTerm(near: raft.currentTerm),
          entries: entries, leaderCommit: forgedIndex(near: raft.commitIndex)))
    case 3: body = .appendEntriesResponse(.accepted(matchIndex: index))
    case 4: body = .heartbeat(Heartbeat(commit: index, readRound: forgedIndex(near: 1)))
    case 5: body = .heartbeatResponse(HeartbeatResponse(readRound: forgedIndex(near: 1)))
    case 6: body = .timeoutNow
    case 8: body = .leaderHint(leader: pick(Self.outsiderIDs)!)
    case 7:
      body = .readIndexRequest(
        ReadIndexRequest(requestID: random(1000), mode: chance(0.5) ? .lease : .readIndex))
    case 9:
      // Asks about a stranger or about a real member (which a member answers with a leaderHint).
      body = .memberQuery(
        candidate: chance(0.5) ? pick(Self.outsiderIDs)! : forgedSender(excluding: target, mode: mode))
    default:
      body = .readIndexResponse(ReadIndexResponse(requestID: random(1000), result: .ready(index: index)))
    }
    return Message(from: from, to: target, term: term, body: body)
  }
}
