/// One Raft server as a pure, deterministic state machine (etcd's raft design).
///
/// Nothing here touches a socket, a file, a clock, a thread or global randomness. Time advances only
/// through `tick()`; messages come in through `step(_:)`; client work through `propose`,
/// `requestRead` and the membership calls; and every effect comes back out of `takeReady()` as data
/// (see `Ready` for what must be durable before what is sent). Given the same options, stored state
/// and sequence of calls, a node produces the same outputs, which is what lets the simulator replay
/// any failure from its seed.
///
/// Not thread-safe: one owner drives it (its `RaftGroup`, on the node loop in the server and on the
/// event queue in the simulator).
public final class RaftNode {
  public let id: NodeID
  let options: RaftOptions
  var random: SplitMix64

  // Durable state (mirrored to stable storage through `Ready.hardState` and `Ready.entries`).
  var term: UInt64
  var vote: NodeID?
  var log: RaftLog

  // Volatile state.
  var role: Role = .follower
  var leader: NodeID?
  /// Ticks since this node last had a reason to reset its election timer.
  var electionElapsed = 0
  var randomizedElectionTimeout = 0
  /// Ticks since a leader was last heard from. Starts at zero so that a freshly restarted node
  /// honours a lease it may have granted before the crash (see `inLease`).
  var leaderContactElapsed = 0
  /// Ticks counted since this node object was created; the time base for leases.
  var ticks: UInt64 = 0
  var heartbeatElapsed = 0
  var checkQuorumElapsed = 0
  /// Votes received in the current (pre-)campaign, one per voter, granted or not.
  var votes: [(voter: NodeID, granted: Bool)] = []
  var campaignIsTransfer = false
  /// The last TimeoutNow this node sent as leader: to whom, in which term. Kept across role changes,
  /// since the candidate's checks can arrive after this node stepped down for it.
  var timeoutNowSent: (target: NodeID, term: UInt64)?
  /// The transfer this node asked its leader to confirm: the nonce, and the campaign message to act
  /// on once confirmed (nil when this node is the one told to campaign).
  var pendingTransferCheck: (check: TransferCheck, leader: NodeID, voteRequest: Message?)?
  /// A transfer campaign the leader confirmed to this node as a voter: its vote request may pass
  /// the lease.
  var confirmedTransfer: (candidate: NodeID, term: UInt64)?
  /// Members this node may hear from while it is outside its own configuration (joining).
  var joinTrust: Set<NodeID> = []
  /// A leader outside this node's configuration that a member named (`leaderHint`), and the term.
  var vouchedLeader: (id: NodeID, term: UInt64)?
  /// Bumped whenever `joinTrust` or `vouchedLeader` changes, so that the server can tell cheaply
  /// whether `trustedPeersOutsideConfiguration` may have changed.
  public internal(set) var trustVersion: UInt64 = 0
  /// `leaderQuery` is sent at most once per election timeout; not before this tick.
  var nextLeaderQueryTick: UInt64 = 0
  /// `memberQuery` likewise.
  var nextMemberQueryTick: UInt64 = 0
  /// Leader only: one entry per other member, sorted by id.
  var progress: [Progress] = []
  var transferTarget: NodeID?
  var transferElapsed = 0
  /// Leader only: bytes of entries above the commit index.
  var uncommittedBytes = 0
  var reads = ReadTracker()

  // Output accumulated for the next `Ready`.
  var pendingMessages: [Message] = []
  var pendingMessagesAfterPersist: [Message] = []
  var pendingReadStates: [ReadState] = []
  var lastHandedOutHardState: HardState
  var lastHandedOutSoftState: SoftState
  var configurationChanged = false

  /// Creates a node from what stable storage holds (use `RaftNode.bootstrap` for a new cluster's
  /// first state, or `StoredState.empty` for a node that will join an existing cluster).
  public init(options: RaftOptions, stored: StoredState) {
    options.validate()
    id = options.id
    self.options = options
    random = SplitMix64(seed: options.randomSeed ^ options.id.rawValue &* 0x9E37_79B9_7F4A_7C15)
    log = RaftLog(snapshot: stored.snapshot, entries: stored.entries, commit: stored.hardState.commit)
    if log.lastTerm > stored.hardState.term {
      // The log reached the disk but the hard state written with it did not. Entries of a term can
      // only arrive after the node moved to that term, so adopt it; any vote cast in it was never
      // sent (votes leave only after they are durable), so the node has not voted in it.
      term = log.lastTerm
      vote = nil
    } else {
      term = stored.hardState.term
      vote = stored.hardState.vote
    }
    let hardState = HardState(term: term, vote: vote, commit: log.committed)
    lastHandedOutHardState = hardState
    lastHandedOutSoftState = SoftState(role: .follower, term: term, leader: nil)
    resetElectionTimer()
    checkInvariants()
  }

  // MARK: - Driving the node

  /// Advances time by one tick.
  public func tick() {
    ticks += 1
    if leaderContactElapsed < Int.max { leaderContactElapsed += 1 }
    if role == .leader {
      tickLeader()
    } else {
      tickElection()
    }
    checkInvariants()
  }

  /// Handles a message from another node. A message that no correct member of this group could
  /// have sent (see `MessageRefusal`) changes nothing and is returned as refused, for the caller to
  /// count and log: peers' input never reaches the core's preconditions.
  @discardableResult
  public func step(_ message: Message) -> MessageRefusal? {
    guard message.from != id else { return nil }
    if let refusal = refusal(of: message) {
      // A leader this node does not know: its own configuration may lag. Ask the members it knows
      // (they vouch for the leader, or not); a stranger gets nothing more than this question.
      if refusal == .unknownSender, message.body.isFromLeader { askWhoLeads() }
      if refusal == .unknownSender, case .voteRequest = message.body { askAboutCandidate(message.from) }
      return refusal
    }
    receive(message)
    checkInvariants()
    return nil
  }

  /// Proposes one command. On success the entry is appended at the returned position; it has been
  /// applied by the cluster once `committedEntries` hands out an entry at that index with that term
  /// (an entry at that index with another term means the proposal was lost to a leader change).
  @discardableResult
  public func propose(_ command: [UInt8]) throws(ProposalError) -> LogPosition {
    try propose(batch: CollectionOfOne(command))
  }

  /// Proposes several commands as consecutive entries; returns the position of the first.
  @discardableResult
  public func propose(batch commands: some Collection<[UInt8]>) throws(ProposalError) -> LogPosition {
    precondition(!commands.isEmpty, "empty proposal batch")
    try checkCanPropose()
    var bytes = 0
    for command in commands {
      let size = command.count + 24
      guard size <= options.maxMessageBytes else {
        throw .entryTooLarge(bytes: command.count, limit: options.maxMessageBytes - 24)
      }
      bytes += size
    }
    guard uncommittedBytes == 0 || uncommittedBytes + bytes <= options.maxUncommittedBytes else {
      throw .overloaded
    }
    let first = LogPosition(index: log.lastIndex + 1, term: term)
    for command in commands {
      appendAsLeader(kind: .command, data: command)
    }
    checkInvariants()
    return first
  }

  /// Whether `takeReady()` has anything to hand out.
  public var hasReady: Bool {
    if role == .leader && leaderHasWorkToFlush() { return true }
    return !pendingMessages.isEmpty || !pendingMessagesAfterPersist.isEmpty || !pendingReadStates.isEmpty
      || log.snapshotToInstall != nil || log.unpersistedFrom <= log.lastIndex
      || min(log.committed, log.persisted) > log.applied || configurationChanged
      || currentHardState != lastHandedOutHardState || currentSoftState != lastHandedOutSoftState
  }

  /// Hands out everything accumulated since the last call. See `Ready` for the contract.
  public func takeReady() -> Ready {
    if role == .leader { flushLeader() }
    var ready = Ready()
    ready.snapshot = log.takeSnapshotToInstall()
    ready.entries = log.takeUnpersisted()
    if let last = ready.entries.last {
      ready.persistedThrough = last.position
    } else if let snapshot = ready.snapshot {
      ready.persistedThrough = snapshot.position
    }
    let hardState = currentHardState
    if hardState != lastHandedOutHardState {
      ready.hardState = hardState
      ready.mustSync =
        hardState.term != lastHandedOutHardState.term || hardState.vote != lastHandedOutHardState.vote
      lastHandedOutHardState = hardState
    }
    if ready.snapshot != nil || !ready.entries.isEmpty { ready.mustSync = true }
    let softState = currentSoftState
    if softState != lastHandedOutSoftState {
      ready.softState = softState
      lastHandedOutSoftState = softState
    }
    if configurationChanged {
      ready.configuration = log.configurations.latest
      configurationChanged = false
    }
    swap(&ready.messages, &pendingMessages)
    swap(&ready.messagesAfterPersist, &pendingMessagesAfterPersist)
    swap(&ready.readStates, &pendingReadStates)
    ready.committedEntries = log.takeCommittedToApply(maxBytes: options.maxApplyBytesPerReady)
    checkInvariants()
    return ready
  }

  /// Reports that a `Ready`'s persistence (and every earlier one's) is durable.
  public func persisted(through position: LogPosition) {
    log.markPersisted(through: position)
    if role == .leader {
      // The leader counts itself toward a quorum only for what its own disk holds (§10.2.1).
      maybeCommit()
    }
    checkInvariants()
  }

  // MARK: - Queries

  public var currentTerm: UInt64 { term }

  public var currentRole: Role { role }

  public var knownLeader: NodeID? { leader }

  public var isLeader: Bool { role == .leader }

  public var commitIndex: UInt64 { log.committed }

  public var lastIndex: UInt64 { log.lastIndex }

  /// The newest configuration (in force from the moment its entry was appended).
  public var configuration: Configuration { log.configurations.latest }

  /// The configuration as of the commit index.
  public var committedConfiguration: Configuration {
    log.configurations.configuration(at: max(log.committed, log.configurations.baseIndex))
  }

  public var snapshotMetadata: SnapshotMetadata { log.snapshot }

  var currentHardState: HardState { HardState(term: term, vote: vote, commit: log.committed) }

  var currentSoftState: SoftState { SoftState(role: role, term: term, leader: leader) }

  public var status: RaftStatus {
    RaftStatus(
      id: id, role: role, term: term, vote: vote, leader: leader, commitIndex: log.committed,
      appliedIndex: log.applied, persistedIndex: log.persisted, firstIndex: log.firstIndex,
      lastIndex: log.lastIndex, snapshotIndex: log.snapshot.index, configuration: configuration,
      isLearner: configuration.contains(id) && !configuration.isVoter(id),
      leadershipTransferTarget: transferTarget,
      followers: progress.map {
        FollowerStatus(
          id: $0.id, matchIndex: $0.match, nextIndex: $0.next, state: $0.stateDescription,
          inflightMessages: $0.inflights.count, recentlyActive: $0.recentlyActive)
      })
  }

  /// The entries this node holds in memory from `index` on (for tests and tools).
  public func entries(from index: UInt64) -> [LogEntry] {
    log.entries(from: max(index, log.firstIndex), maxBytes: .max)
  }

  public func term(at index: UInt64) -> UInt64? { log.term(at: index) }

  // MARK: - Invariants

  func checkInvariants() {
    log.checkInvariants()
    precondition(
      (role == .leader) == (leader == id), "role \(role) with leader \(String(describing: leader))")
    precondition(role == .leader || progress.isEmpty, "progress kept outside leadership")
    precondition(role == .leader || transferTarget == nil)
    precondition(log.lastTerm <= term, "log term \(log.lastTerm) ahead of current term \(term)")
    if role == .leader {
      precondition(vote == id, "leader did not vote for itself")
    }
  }
}

/// What a node reads back from stable storage when it starts.
public struct StoredState: Sendable {
  public var hardState: HardState
  public var snapshot: SnapshotMetadata
  /// Contiguous entries after (or overlapping) the snapshot.
  public var entries: [LogEntry]

  public init(hardState: HardState, snapshot: SnapshotMetadata = .empty, entries: [LogEntry] = []) {
    self.hardState = hardState
    self.snapshot = snapshot
    self.entries = entries
  }

  /// A node that has never been part of a cluster: it waits to be contacted by a leader.
  public static let empty = StoredState(hardState: .initial)
}

extension RaftNode {
  /// The first stored state of a new cluster: a configuration entry at index 1, term 1, as
  /// hashicorp/raft's BootstrapCluster writes. Every initial member must persist the same state;
  /// nodes that join later start from `StoredState.empty` and receive this entry from the leader.
  public static func bootstrap(_ configuration: Configuration) -> StoredState {
    precondition(configuration.voterCount > 0, "a cluster needs at least one voter")
    let entry = LogEntry(index: 1, term: 1, kind: .configuration, data: configuration.encoded())
    return StoredState(hardState: HardState(term: 1), entries: [entry])
  }
}
