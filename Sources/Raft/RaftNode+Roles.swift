// Role transitions, timers and message dispatch.
extension RaftNode {
  /// Whether this node may campaign: only voters of the newest configuration do (learners and
  /// removed servers never start elections).
  var isPromotable: Bool { log.configurations.latest.isVoter(id) }

  /// Whether this node heard from a leader within an election timeout. While in lease, and with
  /// check-quorum on, it refuses to help depose that leader (thesis §4.2.3), which is what makes a
  /// leader's lease (and lease reads) sound.
  var inLease: Bool {
    guard options.checkQuorum else { return false }
    if role == .leader { return true }
    return leaderContactElapsed < options.electionTimeoutTicks
  }

  /// How many ticks ago this node last knew it was in touch with a working cluster, for health
  /// checks (the server's `/health`): a leader, since it sent the newest heartbeat round a quorum
  /// of voters acknowledged; a follower or learner, since it last heard from its leader. Nil when
  /// there is no such contact: a candidate, a follower that knows no leader, or a leader that no
  /// quorum has acknowledged yet in its term.
  public var quorumContactAgeTicks: UInt64? {
    switch role {
    case .leader:
      // A sole voter is its own quorum, in touch with it all the time (as its reads need no round).
      log.configurations.latest.quorum == 1 && log.configurations.latest.isVoter(id)
        ? 0 : reads.confirmedRoundSentTick.map { ticks - $0 }
    case .follower: leader == nil ? nil : UInt64(leaderContactElapsed)
    case .candidate, .preCandidate: nil
    }
  }

  func resetElectionTimer() {
    electionElapsed = 0
    let base = options.electionTimeoutTicks
    randomizedElectionTimeout = base + Int(random.next() % UInt64(base))
  }

  func tickElection() {
    electionElapsed += 1
    guard isPromotable, electionElapsed >= randomizedElectionTimeout else { return }
    campaign(isTransfer: false)
  }

  func tickLeader() {
    heartbeatElapsed += 1
    checkQuorumElapsed += 1
    if transferTarget != nil {
      transferElapsed += 1
      if transferElapsed >= options.electionTimeoutTicks { abortLeadershipTransfer() }
    }
    if checkQuorumElapsed >= options.electionTimeoutTicks {
      checkQuorumElapsed = 0
      if options.checkQuorum && !quorumRecentlyActive() {
        becomeFollower(term: term, leader: nil)
        return
      }
      for k in progress.indices { progress[k].recentlyActive = false }
    }
    if heartbeatElapsed >= options.heartbeatTicks {
      heartbeatElapsed = 0
      broadcastHeartbeat()
    }
  }

  func quorumRecentlyActive() -> Bool {
    let configuration = log.configurations.latest
    var active = configuration.isVoter(id) ? 1 : 0
    for p in progress where p.isVoter && p.recentlyActive { active += 1 }
    return active >= configuration.quorum
  }

  func becomeFollower(term newTerm: UInt64, leader newLeader: NodeID?) {
    precondition(newTerm >= term)
    let wasLeader = role == .leader
    if newTerm > term {
      term = newTerm
      vote = nil
    }
    if wasLeader || leader != newLeader || role != .follower {
      failPendingReads(.leadershipLost)
    }
    role = .follower
    leader = newLeader
    progress = []
    transferTarget = nil
    uncommittedBytes = 0
    votes = []
    resetElectionTimer()
  }

  /// Starts an election: a pre-vote round first unless this is a leadership transfer.
  func campaign(isTransfer: Bool) {
    if options.preVote && !isTransfer {
      becomePreCandidate()
    } else {
      becomeCandidate(isTransfer: isTransfer)
    }
  }

  func becomePreCandidate() {
    precondition(role != .leader && isPromotable)
    failPendingReads(.noLeader)
    role = .preCandidate
    leader = nil
    campaignIsTransfer = false
    votes = [(id, true)]
    resetElectionTimer()
    if !tallyVotes(isPreVote: true) {
      requestVotes(isPreVote: true)
    }
  }

  func becomeCandidate(isTransfer: Bool) {
    precondition(role != .leader && isPromotable)
    failPendingReads(.noLeader)
    role = .candidate
    leader = nil
    term += 1
    vote = id
    campaignIsTransfer = isTransfer
    votes = [(id, true)]
    resetElectionTimer()
    if !tallyVotes(isPreVote: false) {
      requestVotes(isPreVote: false)
    }
  }

  func becomeLeader() {
    precondition(role == .candidate && vote == id)
    role = .leader
    leader = id
    heartbeatElapsed = 0
    checkQuorumElapsed = 0
    transferTarget = nil
    uncommittedBytes = 0
    votes = []
    reads.resetForNewTerm()
    progress = []
    syncProgressWithConfiguration()
    // The no-op lets this leader commit an entry of its own term, and with it everything before
    // (Figure 8); membership changes and reads wait for it (lesson 09).
    appendAsLeader(kind: .noop, data: [])
  }

  /// Dispatches an incoming message after the term rules of Raft §5.1 (with the pre-vote and lease
  /// exceptions of thesis §9.6 and §4.2.3).
  func receive(_ message: Message) {
    // Transfer checks name the terms they are about, and are answered whatever the current term.
    switch message.body {
    case .transferCheck(let check):
      handleTransferCheck(from: message.from, check)
      return
    case .transferConfirm(let nonce):
      handleTransferConfirm(from: message.from, nonce: nonce)
      return
    case .leaderHint(let hinted):
      if !log.configurations.latest.contains(hinted), message.term >= term {
        vouchedLeader = (hinted, message.term)
        trustVersion &+= 1
      }
      return
    case .leaderQuery:
      if let leader, leader != message.from { send(to: message.from, .leaderHint(leader: leader)) }
      return
    case .memberQuery(let candidate):
      if candidate != message.from, candidate != id, log.configurations.latest.contains(candidate) {
        send(to: message.from, .leaderHint(leader: candidate))
      }
      return
    default:
      break
    }
    if message.term > term {
      switch message.body {
      case .voteRequest(let request):
        if inLease {
          // A leader is alive: do not let this candidate depose it, unless the leader itself
          // ordered the campaign (a leadership transfer), which it must first confirm.
          guard request.isLeadershipTransfer, !request.isPreVote else {
            hintLeader(to: message.from)
            return
          }
          guard let confirmed = confirmedTransfer, confirmed.candidate == message.from,
            confirmed.term == message.term
          else {
            askToConfirmTransfer(message.from, campaignTerm: message.term, voteRequest: message)
            return
          }
        }
        if !request.isPreVote {
          becomeFollower(term: message.term, leader: nil)
        }
      case .voteResponse(let response) where response.isPreVote && response.granted:
        break  // A granted pre-vote carries the term we would campaign in; nobody changed term.
      case .appendEntries, .heartbeat, .installSnapshot:
        becomeFollower(term: message.term, leader: message.from)
      default:
        becomeFollower(term: message.term, leader: nil)
      }
    } else if message.term < term {
      switch message.body {
      case .appendEntries, .heartbeat, .installSnapshot:
        // A deposed leader that is cut off by pre-vote or check-quorum would otherwise never learn
        // the newer term: tell it.
        send(to: message.from, .heartbeatResponse(HeartbeatResponse(readRound: 0)))
      case .voteRequest(let request) where request.isPreVote:
        send(to: message.from, .voteResponse(VoteResponse(isPreVote: true, granted: false)))
      default:
        break
      }
      return
    }

    switch message.body {
    case .voteRequest(let request):
      handleVoteRequest(from: message.from, term: message.term, request)
    case .voteResponse(let response):
      handleVoteResponse(from: message.from, term: message.term, response)
    case .appendEntries(let append):
      followLeader(message.from)
      handleAppendEntries(from: message.from, append)
    case .heartbeat(let heartbeat):
      followLeader(message.from)
      handleHeartbeat(from: message.from, heartbeat)
    case .installSnapshot(let snapshot):
      followLeader(message.from)
      handleInstallSnapshot(from: message.from, snapshot)
    case .appendEntriesResponse(let response):
      guard role == .leader else { return }
      handleAppendEntriesResponse(from: message.from, response)
    case .heartbeatResponse(let response):
      guard role == .leader else { return }
      handleHeartbeatResponse(from: message.from, response)
    case .timeoutNow:
      // Only the leader of this term sends it (`refusal(of:)` checks the claim); confirm it with that
      // leader, then campaign at once, skipping pre-vote.
      guard role == .follower, isPromotable, message.from == leader else { return }
      askToConfirmTransfer(id, campaignTerm: term + 1, voteRequest: nil)
    case .readIndexRequest(let request):
      handleReadIndexRequest(from: message.from, request)
    case .readIndexResponse(let response):
      handleReadIndexResponse(from: message.from, response)
    case .transferCheck, .transferConfirm, .leaderHint, .leaderQuery, .memberQuery:
      break  // Handled above.
    }
  }

  /// Names the live leader to a member that campaigns in spite of it: its configuration may lag
  /// and not list that leader (see `Message.Body.leaderHint`).
  func hintLeader(to candidate: NodeID) {
    guard let leader, leader != candidate, log.configurations.latest.contains(candidate) else { return }
    send(to: candidate, .leaderHint(leader: leader))
  }

  /// Asks every member this node knows who leads (at most once per election timeout).
  func askWhoLeads() {
    guard ticks >= nextLeaderQueryTick else { return }
    nextLeaderQueryTick = ticks + UInt64(options.electionTimeoutTicks)
    for member in log.configurations.latest.members where member.id != id {
      send(to: member.id, .leaderQuery)
    }
  }

  /// Asks every member this node knows whether `candidate`, which asked for a vote, belongs to a
  /// newer configuration (at most once per election timeout).
  func askAboutCandidate(_ candidate: NodeID) {
    guard ticks >= nextMemberQueryTick else { return }
    nextMemberQueryTick = ticks + UInt64(options.electionTimeoutTicks)
    for member in log.configurations.latest.members where member.id != id {
      send(to: member.id, .memberQuery(candidate: candidate))
    }
  }

  /// Called for every append, heartbeat or snapshot of the current term: its sender is the leader.
  func followLeader(_ sender: NodeID) {
    // `refusal(of:)` drops a second leader's messages before they get here.
    precondition(role != .leader, "two leaders in term \(term): \(id) and \(sender)")
    if role != .follower || leader != sender {
      becomeFollower(term: term, leader: sender)
    }
    electionElapsed = 0
    leaderContactElapsed = 0
  }

  func send(to peer: NodeID, _ body: Message.Body) {
    pendingMessages.append(Message(from: id, to: peer, term: term, body: body))
  }

  /// Queues a message that promises durable state; it leaves only after the next `Ready` persists.
  func sendAfterPersist(to peer: NodeID, _ body: Message.Body, term messageTerm: UInt64? = nil) {
    pendingMessagesAfterPersist.append(Message(from: id, to: peer, term: messageTerm ?? term, body: body))
  }
}
