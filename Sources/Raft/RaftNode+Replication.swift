// Log replication and commitment (lesson 08, Raft §5.3 and §5.4.2).
extension RaftNode {
  // MARK: Leader side

  func appendAsLeader(kind: LogEntry.Kind, data: [UInt8]) {
    precondition(role == .leader)
    let entry = LogEntry(index: log.lastIndex + 1, term: term, kind: kind, data: data)
    log.appendAsLeader(entry)
    uncommittedBytes += entry.sizeInBytes
    if kind == .configuration {
      // A configuration takes effect as soon as it is appended (thesis §4.1).
      configurationChanged = true
      syncProgressWithConfiguration()
      maybeCommit()
    }
  }

  func progressIndex(of peer: NodeID) -> Int? {
    progress.firstIndex { $0.id == peer }
  }

  func matchIndex(of voter: NodeID) -> UInt64 {
    if voter == id { return log.persisted }
    guard let k = progressIndex(of: voter) else { return 0 }
    return progress[k].match
  }

  /// Sends whatever replication work is pending; called when a `Ready` is assembled so that all
  /// proposals and acknowledgements since the last one travel in as few messages as possible.
  func flushLeader() {
    if reads.roundNeeded { broadcastHeartbeat() }
    for k in progress.indices {
      replicate(to: k)
    }
  }

  func leaderHasWorkToFlush() -> Bool {
    if reads.roundNeeded { return true }
    return progress.contains { !$0.isPaused && ($0.next <= log.lastIndex || $0.sentCommit < log.committed) }
  }

  /// Sends appends to one follower: pipelined while it is in the replicate state and the in-flight
  /// window has room, a single probe otherwise, and an empty append when it has everything but the
  /// latest commit index.
  func replicate(to k: Int) {
    while !progress[k].isPaused {
      let hasEntries = progress[k].next <= log.lastIndex
      guard hasEntries || progress[k].sentCommit < log.committed else { return }
      guard sendAppend(to: k) else { return }
      if progress[k].state != .replicate || !hasEntries { return }
    }
  }

  /// Sends one append (or the snapshot, when the entries it needs are compacted away). Returns
  /// whether an append was sent.
  func sendAppend(to k: Int) -> Bool {
    let peer = progress[k].id
    let prevIndex = progress[k].next - 1
    precondition(prevIndex <= log.lastIndex, "next index beyond the leader's log for \(peer)")
    guard let prevTerm = log.term(at: prevIndex) else {
      sendSnapshot(to: k)
      return false
    }
    let entries = log.entries(from: prevIndex + 1, maxBytes: options.maxMessageBytes)
    let bytes = entries.reduce(0) { $0 + $1.sizeInBytes }
    send(
      to: peer,
      .appendEntries(
        AppendEntries(
          prevLogIndex: prevIndex, prevLogTerm: prevTerm, entries: entries, leaderCommit: log.committed)))
    progress[k].sentCommit = log.committed
    progress[k].sent(lastIndex: prevIndex + UInt64(entries.count), bytes: bytes)
    return true
  }

  func sendSnapshot(to k: Int) {
    let snapshot = log.snapshot
    precondition(snapshot.index > 0, "follower needs a snapshot but none exists")
    progress[k].becomeSnapshot(index: snapshot.index)
    send(to: progress[k].id, .installSnapshot(snapshot))
  }

  /// Heartbeats carry the commit index (capped at what each follower matched, so it never commits an
  /// entry it has not verified) and open a new read-confirmation round.
  func broadcastHeartbeat() {
    heartbeatElapsed = 0
    let round = reads.startRound(atTick: ticks)
    for p in progress {
      send(to: p.id, .heartbeat(Heartbeat(commit: min(p.match, log.committed), readRound: round)))
    }
    confirmReads()
  }

  func handleAppendEntriesResponse(from peer: NodeID, _ response: AppendEntriesResponse) {
    guard let k = progressIndex(of: peer) else { return }
    progress[k].recentlyActive = true
    switch response {
    case .accepted(let matchIndex):
      precondition(matchIndex <= log.lastIndex, "\(peer) claims to match \(matchIndex) beyond our log")
      let advanced = progress[k].acknowledge(through: matchIndex)
      switch progress[k].state {
      case .probe:
        progress[k].becomeReplicate()
      case .snapshot(let index):
        if progress[k].match >= index || progress[k].match + 1 >= log.firstIndex {
          progress[k].becomeProbe()
          progress[k].becomeReplicate()
        }
      case .replicate:
        break
      }
      if advanced { maybeCommit() }
      if transferTarget == peer && progress[k].match == log.lastIndex {
        sendTimeoutNow(to: peer)
      }
    case .rejected(let rejectedIndex, let hintIndex, let hintTerm):
      let probeFrom = log.conflictHint(atOrBelow: hintIndex, maxTerm: hintTerm).index + 1
      _ = progress[k].rejected(at: rejectedIndex, probeFrom: probeFrom)
    }
  }

  func handleHeartbeatResponse(from peer: NodeID, _ response: HeartbeatResponse) {
    guard let k = progressIndex(of: peer) else { return }
    progress[k].recentlyActive = true
    progress[k].ackedReadRound = max(progress[k].ackedReadRound, response.readRound)
    switch progress[k].state {
    case .probe:
      progress[k].probeSent = false  // Probe again: the last probe or its answer may have been lost.
    case .replicate where progress[k].match < log.lastIndex:
      if progress[k].match == progress[k].matchAtLastHeartbeat {
        progress[k].stalledHeartbeats += 1
        if progress[k].stalledHeartbeats >= 3 { progress[k].becomeProbe() }
      } else {
        progress[k].stalledHeartbeats = 0
        progress[k].matchAtLastHeartbeat = progress[k].match
      }
    case .replicate, .snapshot:
      break
    }
    confirmReads()
  }

  /// The commit rule: the highest index stored on a quorum of voters, provided its entry is from the
  /// current term (Raft §5.4.2; Figure 8 shows what goes wrong otherwise).
  func maybeCommit() {
    guard role == .leader else { return }
    let configuration = log.configurations.latest
    guard configuration.voterCount > 0 else { return }
    let candidate = Quorum.agreedValue(
      configuration.voters.map(matchIndex(of:)), quorum: configuration.quorum)
    guard candidate > log.committed else { return }
    guard log.term(at: candidate) == term || options.plantedBugs.contains(.commitEarlierTermByCounting) else {
      return
    }
    advanceCommit(to: candidate)
  }

  func advanceCommit(to target: UInt64) {
    precondition(target > log.committed)
    let wasCommittedInTerm = committedInCurrentTerm
    for i in (log.committed + 1)...target {
      uncommittedBytes -= log.entry(at: i)?.sizeInBytes ?? 0
    }
    uncommittedBytes = max(uncommittedBytes, 0)
    log.commit(to: target)
    if !wasCommittedInTerm && committedInCurrentTerm { releaseReadsAwaitingTermCommit() }
    stepDownIfRemoved()
  }

  var committedInCurrentTerm: Bool { log.term(at: log.committed) == term }

  // MARK: Follower side

  func handleAppendEntries(from leaderID: NodeID, _ append: AppendEntries) {
    var prevIndex = append.prevLogIndex
    var prevTerm = append.prevLogTerm
    var entries = append.entries
    if prevIndex < log.committed {
      // Everything through the commit index already matches the leader's log (leader completeness),
      // so skip the part of this append that lies below it.
      let skip = Int(min(UInt64(entries.count), log.committed - prevIndex))
      guard skip < entries.count else {
        sendAfterPersist(to: leaderID, .appendEntriesResponse(.accepted(matchIndex: log.committed)))
        return
      }
      prevIndex += UInt64(skip)
      prevTerm = entries[skip - 1].term
      entries.removeFirst(skip)
    }
    guard let outcome = log.tryAppend(prevIndex: prevIndex, prevTerm: prevTerm, entries: entries) else {
      let hint = log.conflictHint(atOrBelow: prevIndex, maxTerm: prevTerm)
      send(
        to: leaderID,
        .appendEntriesResponse(
          .rejected(rejectedIndex: append.prevLogIndex, hintIndex: hint.index, hintTerm: hint.term)))
      return
    }
    if let truncatedFrom = outcome.truncatedFrom { withdrawAcknowledgements(from: truncatedFrom) }
    if outcome.configurationChanged { configurationChanged = true }
    log.commit(to: min(append.leaderCommit, outcome.lastNewIndex))
    sendAfterPersist(to: leaderID, .appendEntriesResponse(.accepted(matchIndex: outcome.lastNewIndex)))
  }

  /// Drops queued acknowledgements that vouch for entries just truncated: they would promise the
  /// old leader durability of entries that will never be written.
  func withdrawAcknowledgements(from index: UInt64) {
    pendingMessagesAfterPersist.removeAll { message in
      if case .appendEntriesResponse(.accepted(let match)) = message.body { return match >= index }
      return false
    }
  }

  func handleHeartbeat(from leaderID: NodeID, _ heartbeat: Heartbeat) {
    log.commit(to: min(heartbeat.commit, log.lastIndex))
    send(to: leaderID, .heartbeatResponse(HeartbeatResponse(readRound: heartbeat.readRound)))
  }

  func handleInstallSnapshot(from leaderID: NodeID, _ snapshot: SnapshotMetadata) {
    if snapshot.index <= log.committed {
      sendAfterPersist(to: leaderID, .appendEntriesResponse(.accepted(matchIndex: log.committed)))
      return
    }
    if log.matches(index: snapshot.index, term: snapshot.term) {
      // We already hold the snapshot's last entry: fast-forward the commit index instead.
      log.commit(to: snapshot.index)
      sendAfterPersist(to: leaderID, .appendEntriesResponse(.accepted(matchIndex: snapshot.index)))
      return
    }
    withdrawAcknowledgements(from: log.committed + 1)
    log.restore(snapshot)
    configurationChanged = true
    sendAfterPersist(to: leaderID, .appendEntriesResponse(.accepted(matchIndex: snapshot.index)))
  }
}
