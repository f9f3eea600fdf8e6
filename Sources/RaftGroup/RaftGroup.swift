import Raft

/// One Raft group's runtime: the consensus core, its state machine, the Ready loop that persists,
/// sends and applies, client proposals and reads, snapshots and membership. It is written against
/// the protocols of `GroupWorld.swift`, so the process shell runs it over NIO, the writer thread, TCP
/// and files, and the simulator runs the same code over a simulated clock, disk and network.
///
/// Threading: a group is confined to one thread (an event loop in the server, the event queue in the
/// simulator). Every method must be called there, and every completion it hands out is called there.
public final class RaftGroup<Machine: ReplicatedStateMachine> {
  public let core: RaftNode
  public internal(set) var machine: Machine
  public let options: GroupOptions
  let clock: any GroupClock
  let executor: any GroupExecutor
  let storage: any GroupStorage
  let sink: any GroupMessageSink
  let snapshots: any GroupSnapshotStore<Machine>
  public var hooks: GroupHooks<Machine>

  var proposals: [UInt64: PendingProposal] = [:]
  var reads: [UInt64: PendingRead] = [:]
  /// Confirmed reads waiting for the state machine to reach their index, in index order.
  var readsAwaitingApply: [(index: UInt64, read: PendingRead)] = []
  var nextReadID: UInt64 = 1
  /// Persist jobs submitted and not yet completed (their completions arrive in order).
  var writesInFlight = 0
  var turnScheduled = false
  /// Snapshots received from the leader, waiting for the core to accept them.
  var stagedSnapshots: [UInt64: any StagedSnapshot] = [:]
  var snapshotInProgress = false
  /// Payload bytes applied since the last snapshot began (the byte half of the snapshot threshold).
  var appliedBytesSinceSnapshot = 0
  /// While a received snapshot is being loaded into a new state machine, later persistence
  /// completions wait here: acknowledging them would (acknowledgements being cumulative) also
  /// acknowledge the snapshot and let the core hand out entries before the state machine has it.
  var restoringSnapshot = false
  var completionsDeferredByRestore: [() -> Void] = []
  /// The received snapshots in writes not yet completed, oldest first.
  var installsInFlight: [UInt64] = []
  /// When the core was last ticked (see `catchUpTicks`).
  var lastTickNanoseconds: UInt64
  public private(set) var stopReason: String?
  /// Writes answered in the current batch, kept between batches so that applying allocates no array.
  var answered: [(completion: (Result<Machine.Output, GroupError>) -> Void, output: Machine.Output)] = []

  struct PendingProposal {
    enum Waiter {
      case command((Result<Machine.Output, GroupError>) -> Void)
      case configuration((Result<Void, GroupError>) -> Void)
    }
    var term: UInt64
    var waiter: Waiter
    var deadline: UInt64

    func fail(_ error: GroupError) {
      switch waiter {
      case .command(let completion): completion(.failure(error))
      case .configuration(let completion): completion(.failure(error))
      }
    }
  }

  struct PendingRead {
    var completion: (Result<UInt64, GroupError>) -> Void
    var deadline: UInt64
  }

  public init(
    core: RaftNode, machine: Machine, options: GroupOptions, clock: any GroupClock,
    executor: any GroupExecutor, storage: any GroupStorage, sink: any GroupMessageSink,
    snapshots: any GroupSnapshotStore<Machine>, hooks: GroupHooks<Machine> = GroupHooks()
  ) {
    self.core = core
    self.machine = machine
    self.options = options
    self.clock = clock
    self.executor = executor
    self.storage = storage
    self.sink = sink
    self.snapshots = snapshots
    self.hooks = hooks
    lastTickNanoseconds = clock.nowNanoseconds
  }

  public var isStopped: Bool { stopReason != nil }

  /// Starts the loop: reports the recovered configuration and handles the first `Ready`.
  public func start() {
    lastTickNanoseconds = clock.nowNanoseconds
    hooks.configurationChanged?(core.configuration)
    runTurn()
  }

  // MARK: - The Ready loop

  /// Coalesces work: everything that arrives during one turn of the thread (proposals, messages,
  /// acknowledgements) is handed to the core first and leaves in one `Ready` (one append message per
  /// follower, one persist job).
  public func scheduleTurn() {
    guard !turnScheduled else { return }
    turnScheduled = true
    executor.execute { [self] in
      turnScheduled = false
      runTurn()
    }
  }

  /// Carries out the `Ready` contract (see `Ready`): leader messages go out at once, persistence
  /// goes to storage, acknowledgements leave after it completes, committed entries apply.
  public func runTurn() {
    guard !isStopped else { return }
    while core.hasReady {
      let ready = core.takeReady()
      hooks.readyTaken?(ready)
      if let soft = ready.softState { hooks.softStateChanged?(soft) }
      if let configuration = ready.configuration { hooks.configurationChanged?(configuration) }
      send(ready.messages)
      if ready.needsPersistence || writesInFlight > 0 {
        persist(ready)
        if isStopped { return }
      } else {
        send(ready.messagesAfterPersist)
      }
      if !ready.committedEntries.isEmpty { apply(ready.committedEntries) }
      for state in ready.readStates { readConfirmed(state) }
    }
    maybeTakeSnapshot()
    hooks.turnFinished?()
  }

  private func persist(_ ready: Ready) {
    var staged: (any StagedSnapshot)?
    if let snapshot = ready.snapshot {
      guard let found = stagedSnapshots.removeValue(forKey: snapshot.index), found.metadata == snapshot
      else {
        fail("the core accepted snapshot \(snapshot.index), which this node never received")
        return
      }
      staged = found
    }
    writesInFlight += 1
    if let snapshot = ready.snapshot { installsInFlight.append(snapshot.index) }
    let persistedThrough = ready.persistedThrough
    let installed = ready.snapshot
    let write = GroupWrite(
      hardState: ready.hardState, entries: ready.entries, snapshot: staged, mustSync: ready.mustSync)
    var afterPersist = ready.messagesAfterPersist
    if options.plantedBugs.contains(.acknowledgeBeforeFsync) {
      // Planted bug: votes and append acknowledgements leave before the disk holds what they promise.
      send(afterPersist)
      afterPersist = []
    }
    storage.persist(write) { [self, afterPersist] result in
      let complete = {
        self.persisted(result, afterPersist: afterPersist, through: persistedThrough, installed: installed)
      }
      if restoringSnapshot && !options.plantedBugs.contains(.applyBeforeRestore) {
        completionsDeferredByRestore.append(complete)
      } else {
        complete()
      }
    }
  }

  private func persisted(
    _ result: Result<Void, GroupStorageFailure>, afterPersist: [Message], through position: LogPosition?,
    installed snapshot: SnapshotMetadata?
  ) {
    writesInFlight -= 1
    guard !isStopped else { return }
    if case .failure(let error) = result {
      fail("storage failed: \(error)")
      return
    }
    // The promises in these messages (votes, acknowledgements) are now backed by the disk.
    send(afterPersist)
    if let snapshot {
      installsInFlight.removeFirst()
      if !installsInFlight.isEmpty {
        // A newer snapshot is being written behind this one and will replace it (the store may not
        // even keep this one): skip loading this one, and let that write's acknowledgement, which
        // is cumulative, cover this one's too.
        runTurn()
        return
      }
      restoringSnapshot = true
      restoreMachine(from: snapshot) { [self] in
        restoringSnapshot = false
        if let position { core.persisted(through: position) }
        // Run the held completions in order; if one of them starts another restore, the rest wait
        // for that one (they stay queued, in order, behind it).
        while !restoringSnapshot, !completionsDeferredByRestore.isEmpty {
          completionsDeferredByRestore.removeFirst()()
        }
        runTurn()
      }
      return
    }
    if let position { core.persisted(through: position) }
    runTurn()
  }

  func send(_ messages: [Message]) {
    guard !messages.isEmpty else { return }
    guard messages.contains(where: \.isSnapshot) else {
      sink.send(messages)
      return
    }
    var ordinary: [Message] = []
    ordinary.reserveCapacity(messages.count)
    for message in messages {
      if case .installSnapshot(let metadata) = message.body {
        sink.sendSnapshot(message, metadata: metadata)
      } else {
        ordinary.append(message)
      }
    }
    sink.send(ordinary)
  }

  /// Applies committed entries in order and answers the proposers waiting on them, after the
  /// `applied` hook (which publishes a read view).
  private func apply(_ entries: [LogEntry]) {
    answered.removeAll(keepingCapacity: true)
    var containedCommands = false
    for entry in entries {
      let waiting = proposals.removeValue(forKey: entry.index)
      switch entry.kind {
      case .command:
        let output = machine.apply(entry)
        appliedBytesSinceSnapshot += machine.snapshotWeight(ofApplied: entry)
        containedCommands = true
        if let waiting, case .command(let completion) = waiting.waiter {
          if waiting.term == entry.term {
            answered.append((completion, output))
          } else {
            completion(.failure(.leadershipChanged))
          }
        }
      case .noop, .configuration:
        machine.advance(past: entry)
        guard let waiting else { continue }
        if case .configuration(let completion) = waiting.waiter, waiting.term == entry.term {
          completion(.success(()))
        } else {
          waiting.fail(.leadershipChanged)
        }
      }
    }
    hooks.applied?(entries, containedCommands)
    for (completion, output) in answered { completion(.success(output)) }
    answered.removeAll(keepingCapacity: true)
    serveReadsAwaitingApply()
  }

  // MARK: - Failure and shutdown

  /// Stops for good after an unrecoverable error (a failed fsync leaves unsynced data in an unknown
  /// state): crash-only, the owner restarts the node, which recovers from disk.
  public func fail(_ reason: String) {
    guard !isStopped else { return }
    stop(reason)
    hooks.failed?(reason)
  }

  /// Stops the group: no new requests; waiting ones fail; staged snapshots are thrown away.
  public func stop(_ reason: String) {
    guard !isStopped else { return }
    stopReason = reason
    // A pending proposal is in the log and may still commit (followers may hold it, and a restarted
    // node replays what reached its disk): its outcome is unknown, not refused.
    for proposal in proposals.values { proposal.fail(.stopped(reason)) }
    proposals = [:]
    for read in reads.values { read.completion(.failure(.stopped(reason))) }
    reads = [:]
    for entry in readsAwaitingApply { entry.read.completion(.failure(.stopped(reason))) }
    readsAwaitingApply = []
    for staged in stagedSnapshots.values { staged.abort() }
    stagedSnapshots = [:]
  }
}

extension Message {
  var isSnapshot: Bool {
    if case .installSnapshot = body { return true }
    return false
  }
}
