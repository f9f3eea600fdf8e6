import Foundation
import KVStore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Raft
import RaftStorage
import RaftTransport

/// One raftdb server: drives the Raft core, its storage, its transport and the key-value state
/// machine, and serves client requests. All mutable state lives on `loop`, one dedicated thread,
/// which also runs the peer connections (so a peer's message reaches the core without a thread hop);
/// WAL writes and fsyncs run on the storage writer thread and HTTP on NIO's other event loops.
public final class RaftDBNode: @unchecked Sendable {
  // Unchecked: every mutable property is confined to `loop` (each entry point hops there first;
  // `readView` is the exception, behind its own lock),
  // except `transport`, which is set once during start-up before any other thread can see the node.
  public let options: ServerOptions
  public let identity: MemberInfo
  /// This node's member id, from its data directory's identity (RaftDBNode+Identity.swift).
  public let id: NodeID
  /// This node's cluster, 0 when unknown (a data directory from before cluster ids).
  public let clusterID: UInt64
  /// Names of the members seen in a configuration or listed by a joining node's seed, for log
  /// lines (a removed member is still named in the line that says so); see `name(of:)`.
  var knownNames: [NodeID: String] = [:]
  let logger: Logger
  let loopGroup: MultiThreadedEventLoopGroup
  let loop: any EventLoop
  let networkGroup: any EventLoopGroup
  let writer: StorageWriter
  let metrics: NodeMetrics
  var transport: PeerTransport!

  var raft: RaftNode
  var machine: KVStateMachine {
    didSet { publishReadView() }
  }
  /// A frozen copy of the state machine as of the last applied batch, for `stale` reads: they are
  /// answered on the HTTP thread from this copy, without a hop to `loop` and back. Taking the copy
  /// is O(1) (persistent tries); the next writes copy the paths they touch.
  let readView: NIOLockedValueBox<KVSnapshot>
  var proposals: [UInt64: PendingProposal] = [:]
  var reads: [UInt64: PendingRead] = [:]
  /// Confirmed reads waiting for the state machine to reach their index, in index order.
  var readsAwaitingApply: [(index: UInt64, read: PendingRead)] = []
  var nextRequestID: UInt64 = 1
  /// Persist jobs submitted and not yet completed (their completions arrive in order).
  var writesInFlight = 0
  var readyScheduled = false
  /// Snapshots received from the leader, waiting for the core to accept them.
  var stagedSnapshots: [UInt64: LockedSnapshotSink] = [:]
  var snapshotInProgress = false
  /// Payload bytes applied since the last snapshot began (the byte half of the snapshot threshold).
  var appliedBytesSinceSnapshot = 0
  /// Writes applied in the current batch, answered once the batch's read view is published (kept
  /// between batches so that applying allocates no array).
  private var answered: [(EventLoopPromise<WriteOutcome>, WriteOutcome)] = []
  /// While a received snapshot is being loaded into a new state machine, later persistence
  /// completions wait here: acknowledging them would (acknowledgements being cumulative) also
  /// acknowledge the snapshot and let the core hand out entries before the state machine has it.
  var restoringSnapshot = false
  var completionsDeferredByRestore: [() -> Void] = []
  var lastSoftState: SoftState?
  var lastAdmission: PeerAdmission?
  /// The newest configuration's members, kept as a set for `currentAdmission`, and a count of
  /// configuration changes.
  var admissionMembers: Set<NodeID> = []
  var configurationVersion: UInt64 = 0
  var lastAdmissionKey: AdmissionKey?
  var ticker: RepeatedTask?
  /// When the core was last ticked (see `catchUpTicks`).
  var lastTick = NIODeadline.now()
  var stopped = false
  /// Refused peer input, logged at most once per reason per interval (every refusal is counted).
  // The log closures must not touch these (they run inside the logs' own mutating calls): they use
  // `refusalLogInterval`.
  var messageRefusalLog = RateLimitedLog<MessageRefusal, (message: Message, refusal: MessageRefusal)>(
    interval: refusalLogInterval)
  var connectionRefusalLog = RateLimitedLog<TransportRefusal.Reason, TransportRefusal>(
    interval: refusalLogInterval)
  static let refusalLogInterval = TimeAmount.seconds(10)
  /// Why the node stopped, for the answers to requests that arrive afterwards.
  var stopReason = "node is shutting down"
  /// Called once after a fatal error; the executable exits so that a supervisor restarts it.
  let onFatalError: @Sendable (String) -> Void

  struct PendingProposal {
    enum Waiter {
      case write(EventLoopPromise<WriteOutcome>)
      case configuration(EventLoopPromise<Void>)
    }
    var term: UInt64
    var waiter: Waiter
    var deadline: NIODeadline
  }

  struct PendingRead {
    var key: String
    var promise: EventLoopPromise<KVRecord?>
    var deadline: NIODeadline
  }

  init(
    options: ServerOptions, logger: Logger, networkGroup: any EventLoopGroup, writer: StorageWriter,
    metrics: NodeMetrics, raft: RaftNode, machine: KVStateMachine, stored: NodeIdentity,
    onFatalError: @escaping @Sendable (String) -> Void
  ) {
    self.onFatalError = onFatalError
    self.options = options
    identity = options.identity
    id = stored.memberID
    clusterID = stored.clusterID
    self.logger = logger
    loopGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    loop = loopGroup.next()
    self.networkGroup = networkGroup
    self.writer = writer
    self.metrics = metrics
    self.raft = raft
    self.machine = machine
    readView = NIOLockedValueBox(machine.snapshot())
  }

  func publishReadView() {
    let view = machine.snapshot()
    readView.withLockedValue { $0 = view }
  }

  // MARK: - The Ready loop

  /// Coalesces work: everything that arrives during one turn of the loop (proposals, messages,
  /// acknowledgements) is handed to the core first and leaves in one `Ready` (one append message per
  /// follower, one persist job).
  func scheduleProcessReady() {
    guard !readyScheduled else { return }
    readyScheduled = true
    loop.execute {
      self.readyScheduled = false
      self.processReady()
    }
  }

  /// Carries out the `Ready` contract (see `Ready`): leader messages go out at once, persistence
  /// goes to the writer thread, acknowledgements leave after it completes, committed entries apply.
  func processReady() {
    loop.preconditionInEventLoop()
    guard !stopped else { return }
    while raft.hasReady {
      let ready = raft.takeReady()
      if let soft = ready.softState { softStateChanged(soft) }
      if let configuration = ready.configuration { configurationChanged(configuration) }
      send(ready.messages)
      if ready.needsPersistence || writesInFlight > 0 {
        persist(ready)
      } else {
        send(ready.messagesAfterPersist)
      }
      if !ready.committedEntries.isEmpty { apply(ready.committedEntries) }
      for state in ready.readStates { readAnswered(state) }
    }
    publishAdmission()
    maybeTakeSnapshot()
  }

  /// Who the transport should accept connections from, as of now.
  var currentAdmission: PeerAdmission {
    var admission = PeerAdmission()
    admission.members = admissionMembers
    admission.trusted = raft.trustedPeersOutsideConfiguration
    admission.admitsStrangers = false
    admission.clusterID = clusterID
    admission.term = raft.currentTerm
    admission.leader = raft.knownLeader
    return admission
  }

  /// Tells the transport when who may connect changed (a configuration, a term, a leader, or the
  /// grace for unknown leaders running out).
  func publishAdmission() {
    // Called after every Ready: compare what admission depends on before building it (it allocates).
    let key = AdmissionKey(
      term: raft.currentTerm, leader: raft.knownLeader, trustVersion: raft.trustVersion,
      configurationVersion: configurationVersion)
    guard key != lastAdmissionKey else { return }
    lastAdmissionKey = key
    let admission = currentAdmission
    guard admission != lastAdmission else { return }
    lastAdmission = admission
    transport.updateAdmission(admission)
  }

  struct AdmissionKey: Equatable {
    var term: UInt64
    var leader: NodeID?
    var trustVersion: UInt64
    var configurationVersion: UInt64
  }

  private func persist(_ ready: Ready) {
    var snapshotSink: LockedSnapshotSink?
    if let snapshot = ready.snapshot {
      guard let staged = stagedSnapshots.removeValue(forKey: snapshot.index), staged.metadata == snapshot
      else {
        fail("the core accepted snapshot \(snapshot.index), which this node never received")
        return
      }
      snapshotSink = staged
    }
    writesInFlight += 1
    let afterPersist = ready.messagesAfterPersist
    let persistedThrough = ready.persistedThrough
    let installed = ready.snapshot
    writer.submit(
      PersistJob(
        batch: PersistBatch(ready), mustSync: ready.mustSync, snapshotToCommit: snapshotSink,
        completion: { result in
          self.loop.execute {
            let complete = {
              self.persisted(
                result, afterPersist: afterPersist, through: persistedThrough, installed: installed)
            }
            if self.restoringSnapshot {
              self.completionsDeferredByRestore.append(complete)
            } else {
              complete()
            }
          }
        }))
  }

  private func persisted(
    _ result: Result<Void, StorageError>, afterPersist: [Message], through position: LogPosition?,
    installed snapshot: SnapshotMetadata?
  ) {
    writesInFlight -= 1
    guard !stopped else { return }
    if case .failure(let error) = result {
      fail("storage failed: \(error)")
      return
    }
    // The promises in these messages (votes, acknowledgements) are now backed by the disk.
    send(afterPersist)
    if let snapshot {
      restoringSnapshot = true
      restoreMachine(from: snapshot) {
        self.restoringSnapshot = false
        if let position { self.raft.persisted(through: position) }
        // Run the held completions in order; if one of them starts another restore, the rest wait
        // for that one (they stay queued, in order, behind it).
        while !self.restoringSnapshot, !self.completionsDeferredByRestore.isEmpty {
          self.completionsDeferredByRestore.removeFirst()()
        }
        self.processReady()
      }
      return
    }
    if let position { raft.persisted(through: position) }
    processReady()
  }

  func send(_ messages: [Message]) {
    guard !messages.isEmpty else { return }
    var ordinary: [Message] = []
    ordinary.reserveCapacity(messages.count)
    for message in messages {
      if case .installSnapshot(let metadata) = message.body {
        sendSnapshot(message, metadata: metadata)
      } else {
        ordinary.append(message)
      }
    }
    transport.send(ordinary)
  }

  /// Applies committed entries in order and answers the clients waiting on them, after publishing
  /// the new read view (so that a client that saw its write succeed reads it back, even `stale`).
  private func apply(_ entries: [LogEntry]) {
    answered.removeAll(keepingCapacity: true)
    var appliedCommand = false
    for entry in entries {
      appliedBytesSinceSnapshot += entry.data.count
      let waiting = proposals.removeValue(forKey: entry.index)
      switch entry.kind {
      case .command:
        let outcome = machine.apply(index: entry.index, data: entry.data)
        appliedCommand = true
        if case .write(let promise) = waiting?.waiter {
          if waiting!.term == entry.term {
            answered.append((promise, WriteOutcome(result: outcome.result, replayed: outcome.isDuplicate)))
          } else {
            promise.fail(NodeError.outcomeUnknown("leadership changed before the write committed; retry"))
          }
        }
      case .noop, .configuration:
        machine.advance(to: entry.index)
        if case .configuration(let promise) = waiting?.waiter {
          if waiting!.term == entry.term {
            promise.succeed(())
          } else {
            promise.fail(
              NodeError.outcomeUnknown("leadership changed before the membership change committed"))
          }
        }
        if case .write(let promise) = waiting?.waiter {
          promise.fail(NodeError.outcomeUnknown("leadership changed before the write committed; retry"))
        }
      }
    }
    if appliedCommand { publishReadView() }
    for (promise, outcome) in answered { promise.succeed(outcome) }
    answered.removeAll(keepingCapacity: true)
    serveReadsAwaitingApply()
    metrics.appliedIndex.record(Int64(clamping: machine.appliedIndex))
    metrics.commitIndex.record(Int64(clamping: raft.commitIndex))
    metrics.keys.record(Int64(machine.count))
  }

  private func softStateChanged(_ soft: SoftState) {
    let previous = lastSoftState
    lastSoftState = soft
    metrics.term.record(Int64(clamping: soft.term))
    metrics.isLeader.record(soft.role == .leader ? 1 : 0)
    if previous?.leader != soft.leader {
      metrics.leaderChanges.increment()
      // A joining node knows its leader's name from its seed at best (`name(of:)`).
      let leaderName = soft.leader.map(name(of:)) ?? "none"
      logger.info(
        "leader is now \(leaderName)", metadata: ["term": "\(soft.term)", "role": "\(roleName(soft.role))"])
    }
    if previous?.role == .leader && soft.role != .leader {
      // Reads waiting for confirmation were failed by the core; writes may still commit.
      logger.info("stepped down", metadata: ["term": "\(soft.term)"])
    }
  }

  func configurationChanged(_ configuration: Configuration) {
    admissionMembers = Set(configuration.members.map(\.id))
    configurationVersion &+= 1
    var peers: [NodeID: String] = [:]
    for (member, info) in configuration.memberInfos where member.id != id && !info.raftAddress.isEmpty {
      peers[member.id] = info.raftAddress
    }
    transport.setPeers(peers)
    publishNames()
    logger.info(
      "configuration changed",
      metadata: [
        "members":
          "\(configuration.memberInfos.map { "\($0.info.name)\($0.member.isVoter ? "" : "(learner)")" })"
      ])
  }

  func roleName(_ role: Role) -> String {
    switch role {
    case .leader: "leader"
    case .candidate, .preCandidate: "candidate"
    case .follower:
      raft.configuration.contains(id) && !raft.configuration.isVoter(id) ? "learner" : "follower"
    }
  }

  // MARK: - Time

  func startTicking() {
    let interval = TimeAmount.milliseconds(Int64(options.heartbeatIntervalMillis))
    lastTick = NIODeadline.now()
    ticker = loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
      guard !self.stopped else { return }
      self.catchUpTicks()
      self.expireRequests()
      self.processReady()
      self.flushRefusalLogs()
      self.metrics.outboundPeers.record(Int64(self.transport.outboundPeerCount))
      self.metrics.droppedPeerMessages.record(Int64(self.transport.droppedMessages))
    }
  }

  /// Advances the core by every tick interval that has passed on the monotonic clock since the last
  /// tick. Time in the core must track real elapsed time, not the number of timer callbacks: a process
  /// that was paused (SIGSTOP, a long GC-like stall, a starved CPU) would otherwise resume believing its
  /// leader lease still holds and its election timers barely moved. Called before every lease read too.
  func catchUpTicks() {
    let interval = Int64(options.heartbeatIntervalMillis) * 1_000_000
    let elapsed = (NIODeadline.now() - lastTick).nanoseconds
    guard elapsed >= interval else { return }
    let due = elapsed / interval
    // Past an election timeout more ticks change nothing; the cap keeps a long pause cheap.
    for _ in 0..<min(due, Int64(4 * options.electionTimeoutTicks)) { raft.tick() }
    lastTick = lastTick + .nanoseconds(due * interval)
  }

  /// Fails requests that waited longer than the request timeout.
  private func expireRequests() {
    let now = NIODeadline.now()
    for (index, proposal) in proposals where proposal.deadline < now {
      proposals[index] = nil
      let error = NodeError.outcomeUnknown(
        "timed out waiting for the write to commit; it may or may not apply — retry with the same Idempotency-Key"
      )
      switch proposal.waiter {
      case .write(let promise): promise.fail(error)
      case .configuration(let promise): promise.fail(error)
      }
    }
    for (requestID, read) in reads where read.deadline < now {
      reads[requestID] = nil
      read.promise.fail(NodeError.unavailable("timed out confirming leadership for the read"))
    }
    if readsAwaitingApply.contains(where: { $0.read.deadline < now }) {
      for entry in readsAwaitingApply where entry.read.deadline < now {
        entry.read.promise.fail(NodeError.unavailable("timed out waiting for the state machine to catch up"))
      }
      readsAwaitingApply.removeAll { $0.read.deadline < now }
    }
  }

  // MARK: - Failure and shutdown

  /// Stops serving after an unrecoverable error (a failed fsync leaves unsynced data in an unknown
  /// state): crash-only, the process supervisor restarts the node, which recovers from disk.
  func fail(_ reason: String) {
    guard !stopped else { return }
    logger.critical("stopping the node: \(reason)")
    stopReason = reason
    stopAndFailWaiters(NodeError.stopped(reason))
    // The waiters' answers are on their way to the connections' loops; the executable lets the
    // HTTP server write them before it exits (RaftDBCommand).
    onFatalError(reason)
  }

  func stopAndFailWaiters(_ error: NodeError) {
    stopped = true
    ticker?.cancel()
    // A pending proposal is in the log and may still commit (followers may hold it, and a restarted
    // node replays what reached its disk): its outcome is unknown, not refused (docs/API.md).
    let unknown = NodeError.outcomeUnknown(
      "\(error); the write was proposed and may still be applied: retry with the same Idempotency-Key")
    for proposal in proposals.values {
      switch proposal.waiter {
      case .write(let promise): promise.fail(unknown)
      case .configuration(let promise): promise.fail(unknown)
      }
    }
    proposals = [:]
    for read in reads.values { read.promise.fail(error) }
    reads = [:]
    for entry in readsAwaitingApply { entry.read.promise.fail(error) }
    readsAwaitingApply = []
    for sink in stagedSnapshots.values { sink.abort() }
    stagedSnapshots = [:]
  }

  /// Stops the node: no new requests, pending ones fail, queued writes finish, connections close.
  public func shutdown() async {
    try? await loop.submit { self.stopAndFailWaiters(.stopped("node is shutting down")) }.get()
    await transport.shutdown()
    writer.stop()
    try? await loopGroup.shutdownGracefully()
  }
}
