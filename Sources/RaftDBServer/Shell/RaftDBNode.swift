import Foundation
import KVStore
import KVWatch
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Raft
import RaftDBService
import RaftGroup
import RaftStorage
import RaftTransport
import Synchronization

/// One raftdb server: the process shell around the node's `RaftGroup`. It owns the group's thread
/// (`loop`, one dedicated event loop, which also runs the peer connections so that a peer's message
/// reaches the core without a thread hop), the storage writer thread, the peer transport, metrics
/// and logs, and it adapts client requests to the group. HTTP runs on NIO's other event loops.
public final class RaftDBNode: @unchecked Sendable {
  // Unchecked: every mutable property is confined to `loop` (each entry point hops there first;
  // `readView` is the exception, behind its own lock), except `transport` and `group`, which are set
  // once during start-up before any other thread can see the node.
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
  /// The Raft group this node runs: core, state machine, Ready loop, reads and snapshots.
  var group: RaftGroup<KVStateMachine>!

  var raft: RaftNode { group.core }
  var machine: KVStateMachine { group.machine }
  /// A frozen copy of the state machine as of the last applied batch, for `stale` reads: they are
  /// answered on the HTTP thread from this copy, without a hop to `loop` and back. Taking the copy
  /// is O(1) (persistent tries); the next writes copy the paths they touch.
  let readView: NIOLockedValueBox<KVSnapshot>
  /// The core's term after the last turn, for response headers read on other threads.
  let publishedTerm = Atomic<UInt64>(0)
  /// This member's watchers, on a thread of their own, fed every published read view.
  public let watches: WatchDispatcher
  let watchLoopGroup: MultiThreadedEventLoopGroup
  var lastSoftState: SoftState?
  var lastAdmission: PeerAdmission?
  /// The newest configuration's members, kept as a set for `currentAdmission`, and a count of
  /// configuration changes.
  var admissionMembers: Set<NodeID> = []
  var configurationVersion: UInt64 = 0
  var lastAdmissionKey: AdmissionKey?
  /// The store's compacted revision when `applied` last looked: a change means a compaction freed
  /// history, which is then handed back to the system (`releaseFreedMemory`).
  var lastCompactRevision: Int64 = 0
  var ticker: RepeatedTask?
  /// The leader's cluster version monitor (RaftDBNode+ClusterVersion.swift).
  let versionMonitor = NIOLockedValueBox<Task<Void, Never>?>(nil)
  /// The version a proposed `setClusterVersion` raises to, until it is applied or fails.
  var clusterVersionRaiseInFlight: UInt32?
  /// The leader's lease clock (RaftDBNode+Leases.swift).
  var leaseClock = LeaseClock()
  /// The leader's auto-compactor (RaftDBNode+AutoCompaction.swift); nil while not leading.
  var autoCompactor: AutoCompactor?
  /// "Cluster version stays" lines, at most one per member per interval.
  var clusterVersionHeldLog = RateLimitedLog<String, (String, UInt32)>(interval: .seconds(60))
  var stopped: Bool { group.isStopped }
  /// Why the node stopped, for the answers to requests that arrive afterwards.
  var stopReason: String { group.stopReason ?? "node is shutting down" }
  /// Refused peer input, logged at most once per reason per interval (every refusal is counted).
  // The log closures must not touch these (they run inside the logs' own mutating calls): they use
  // `refusalLogInterval`.
  var messageRefusalLog = RateLimitedLog<MessageRefusal, (message: Message, refusal: MessageRefusal)>(
    interval: refusalLogInterval)
  var connectionRefusalLog = RateLimitedLog<TransportRefusal.Reason, TransportRefusal>(
    interval: refusalLogInterval)
  static let refusalLogInterval = TimeAmount.seconds(10)
  /// Called once after a fatal error; the executable exits so that a supervisor restarts it.
  let onFatalError: @Sendable (String) -> Void

  init(
    options: ServerOptions, logger: Logger, networkGroup: any EventLoopGroup, writer: StorageWriter,
    metrics: NodeMetrics, machine: KVStateMachine, stored: NodeIdentity,
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
    readView = NIOLockedValueBox(machine.snapshot())
    watchLoopGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    watches = WatchDispatcher(
      store: machine.store, limits: options.watchLimits, loop: watchLoopGroup.next(),
      progressInterval: .milliseconds(Int64(options.watchProgressNotifyIntervalMillis)),
      observer: NodeWatchObserver(metrics: metrics, logger: logger))
  }

  /// Builds the node's group over the real world (see ServerWorld.swift).
  func makeGroup(core: RaftNode, machine: KVStateMachine) {
    var groupOptions = GroupOptions()
    groupOptions.tickNanoseconds = UInt64(options.heartbeatIntervalMillis) * 1_000_000
    groupOptions.electionTimeoutTicks = options.electionTimeoutTicks
    groupOptions.requestTimeoutNanoseconds = UInt64(options.requestTimeoutMillis) * 1_000_000
    groupOptions.snapshotThresholdEntries = options.snapshotThreshold
    groupOptions.snapshotThresholdBytes = options.snapshotThresholdBytes
    var hooks = GroupHooks<KVStateMachine>()
    hooks.softStateChanged = { [unowned self] in softStateChanged($0) }
    hooks.configurationChanged = { [unowned self] in configurationChanged($0) }
    hooks.applied = { [unowned self] _, containedCommands in applied(containedCommands: containedCommands) }
    hooks.machineRestored = { [unowned self] _, _ in
      publishReadView()
      stopIfTheClusterOutgrewThisBuild()
    }
    hooks.turnFinished = { [unowned self] in publishAdmission() }
    hooks.failed = { [unowned self] reason in failed(reason) }
    group = RaftGroup(
      core: core, machine: machine, options: groupOptions, clock: MonotonicClock(),
      executor: LoopExecutor(loop: loop), storage: WriterStorage(writer: writer, loop: loop),
      sink: TransportSink(node: self), snapshots: FileSnapshotter(node: self), hooks: hooks)
  }

  func publishReadView() {
    let view = machine.snapshot()
    readView.withLockedValue { $0 = view }
    watches.storePublished(view.store)
  }

  private func applied(containedCommands: Bool) {
    if containedCommands {
      publishReadView()
      stopIfTheClusterOutgrewThisBuild()
    }
    metrics.appliedIndex.record(Int64(clamping: machine.appliedIndex))
    metrics.commitIndex.record(Int64(clamping: raft.commitIndex))
    metrics.keys.record(Int64(machine.count))
    let compactRevision = machine.store.compactRevision
    metrics.compactRevision.record(compactRevision)
    if compactRevision != lastCompactRevision {
      lastCompactRevision = compactRevision
      releaseMemoryFreedByCompaction()
    }
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
    publishedTerm.store(raft.currentTerm, ordering: .relaxed)
    // Called after every turn: compare what admission depends on before building it (it allocates).
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
    ticker = loop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in
      guard !self.stopped else { return }
      self.group.tick()
      self.leaseClockTick()
      self.autoCompactionTick()
      self.flushRefusalLogs()
      self.metrics.outboundPeers.record(Int64(self.transport.outboundPeerCount))
      self.metrics.droppedPeerMessages.record(Int64(self.transport.droppedMessages))
    }
  }

  // MARK: - Failure and shutdown

  /// The group stopped after an unrecoverable error (a failed fsync leaves unsynced data in an
  /// unknown state): crash-only, the process supervisor restarts the node, which recovers from disk.
  func fail(_ reason: String) { group.fail(reason) }

  private func failed(_ reason: String) {
    logger.critical("stopping the node: \(reason)")
    ticker?.cancel()
    // The waiters' answers are on their way to the connections' loops; the executable lets the
    // HTTP server write them before it exits (RaftDBCommand).
    onFatalError(reason)
  }

  /// Stops the node: no new requests, pending ones fail, queued writes finish, connections close.
  public func shutdown() async {
    await stopClusterVersionMonitor()
    try? await loop.submit {
      self.ticker?.cancel()
      self.group.stop("node is shutting down")
    }.get()
    await transport.shutdown()
    writer.stop()
    watches.stop()
    try? await loopGroup.shutdownGracefully()
    try? await watchLoopGroup.shutdownGracefully()
  }
}
