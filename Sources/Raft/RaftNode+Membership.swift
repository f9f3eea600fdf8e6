// Single-server membership changes (lesson 09, thesis §4.1) and leadership transfer (thesis §3.10).
extension RaftNode {
  func checkCanPropose() throws(ProposalError) {
    guard role == .leader else { throw .notLeader(leader: leader) }
    if let transferTarget { throw .leadershipTransferInProgress(target: transferTarget) }
  }

  /// Proposes adding, promoting or removing one server. The new configuration is in force from the
  /// moment its entry is appended (on every node that appends it); at most one change may be
  /// uncommitted, and none may start before this leader's no-op entry commits (lesson 09: otherwise
  /// changes from two leaders can overlap without a common majority).
  @discardableResult
  public func proposeConfigurationChange(_ change: ConfigurationChange) throws(ProposalError) -> LogPosition {
    try checkCanPropose()
    guard committedInCurrentTerm else { throw .leaderNotReady }
    guard log.configurations.latestIndex <= log.committed else { throw .configurationChangePending }
    let updated: Configuration
    do {
      updated = try log.configurations.latest.applying(change)
    } catch {
      throw .invalidConfigurationChange(error)
    }
    let position = LogPosition(index: log.lastIndex + 1, term: term)
    appendAsLeader(kind: .configuration, data: updated.encoded())
    checkInvariants()
    return position
  }

  /// Keeps the leader's progress table in step with the newest configuration.
  func syncProgressWithConfiguration() {
    let configuration = log.configurations.latest
    var updated: [Progress] = []
    updated.reserveCapacity(configuration.members.count)
    for member in configuration.members where member.id != id {
      if let k = progressIndex(of: member.id) {
        var existing = progress[k]
        existing.isVoter = member.isVoter
        updated.append(existing)
      } else {
        var fresh = Progress(
          id: member.id, isVoter: member.isVoter, next: log.lastIndex + 1,
          maxInflightMessages: options.maxInflightMessages, maxInflightBytes: options.maxInflightBytes)
        // A grace period: a member is not counted as silent before it had a chance to answer.
        fresh.recentlyActive = true
        updated.append(fresh)
      }
    }
    progress = updated
    if let target = transferTarget, !configuration.isVoter(target) { abortLeadershipTransfer() }
  }

  /// A leader that removed itself keeps leading until the removal commits (thesis §4.2.2), then
  /// steps down, handing over at once to an up-to-date voter when there is one.
  func stepDownIfRemoved() {
    let configuration = log.configurations.latest
    guard role == .leader, !configuration.isVoter(id), log.configurations.latestIndex <= log.committed else {
      return
    }
    let successor = progress.filter { $0.isVoter && $0.match == log.lastIndex }.first?.id
    if let successor { sendTimeoutNow(to: successor) }
    becomeFollower(term: term, leader: nil)
  }

  /// Hands leadership to `target`, a voter: proposals pause, the target is brought up to date, then
  /// told to campaign at once. The attempt is abandoned after an election timeout.
  public func transferLeadership(to target: NodeID) throws(LeadershipTransferError) {
    defer { checkInvariants() }
    guard role == .leader else { throw .notLeader(leader: leader) }
    guard target != id else { throw .alreadyLeader }
    guard log.configurations.latest.isVoter(target), let k = progressIndex(of: target) else {
      throw .notAVoter(target)
    }
    if transferTarget == target { return }
    transferTarget = target
    transferElapsed = 0
    if progress[k].match == log.lastIndex {
      sendTimeoutNow(to: target)
    }
  }

  /// Tells `target` to campaign now. The lease is revoked for the rest of the term (see
  /// `ReadTracker.leaseRevoked`).
  func sendTimeoutNow(to target: NodeID) {
    reads.leaseRevoked = true
    timeoutNowSent = (target, term)
    send(to: target, .timeoutNow)
  }

  /// Asks `leader` to confirm that it ordered `check.candidate` to campaign (see `transferCheck`).
  func askToConfirmTransfer(_ candidate: NodeID, campaignTerm: UInt64, voteRequest: Message?) {
    guard let leader else { return }
    let check = TransferCheck(nonce: random.next(), candidate: candidate, campaignTerm: campaignTerm)
    pendingTransferCheck = (check, leader, voteRequest)
    send(to: leader, .transferCheck(check))
  }

  /// The leader's side: confirms only the order it really sent.
  func handleTransferCheck(from peer: NodeID, _ check: TransferCheck) {
    guard let sent = timeoutNowSent, sent.target == check.candidate, check.campaignTerm == sent.term + 1
    else {
      return
    }
    send(to: peer, .transferConfirm(nonce: check.nonce))
  }

  func handleTransferConfirm(from peer: NodeID, nonce: UInt64) {
    guard let pending = pendingTransferCheck, pending.check.nonce == nonce, pending.leader == peer else {
      return
    }
    pendingTransferCheck = nil
    if let voteRequest = pending.voteRequest {
      // A voter: the campaign was ordered by its leader, so its lease must not stand in the way.
      confirmedTransfer = (pending.check.candidate, pending.check.campaignTerm)
      receive(voteRequest)
    } else if role == .follower, isPromotable, term + 1 == pending.check.campaignTerm {
      campaign(isTransfer: true)
    }
  }

  func abortLeadershipTransfer() {
    transferTarget = nil
    transferElapsed = 0
  }

  // MARK: - Snapshots and transport feedback

  /// Metadata for a snapshot of the state machine taken after applying through `index`: its term
  /// and the configuration in force there. Nil if `index` is below the current snapshot.
  public func snapshotMetadata(at index: UInt64) -> SnapshotMetadata? {
    log.snapshotMetadata(at: index)
  }

  /// Tells the node that a snapshot through `index` is durably stored, so the log below it (less
  /// `compactionRetainEntries` and `compactionRetainBytes`) can be dropped. Returns false, changing nothing, when `index` is not
  /// newer than the current snapshot or not yet applied and durable.
  @discardableResult
  public func compactLog(through index: UInt64) -> Bool {
    defer { checkInvariants() }
    return log.compact(
      through: index, retain: options.compactionRetainEntries, retainBytes: options.compactionRetainBytes)
  }

  /// The transport could not reach `peer`: stop pipelining to it and probe instead.
  public func reportUnreachable(_ peer: NodeID) {
    guard role == .leader, let k = progressIndex(of: peer), progress[k].state == .replicate else { return }
    progress[k].becomeProbe()
  }

  /// The transport finished (or failed) streaming a snapshot to `peer`. On failure the leader probes
  /// again and sends a snapshot anew if still needed; on success it waits for the follower's answer.
  public func reportSnapshot(to peer: NodeID, succeeded: Bool) {
    guard role == .leader, let k = progressIndex(of: peer), case .snapshot = progress[k].state else { return }
    if succeeded {
      // Wait for the follower's answer to the installSnapshot message before sending more.
      progress[k].becomeProbe()
      progress[k].probeSent = true
    } else {
      progress[k].snapshotFailed()
    }
  }
}
