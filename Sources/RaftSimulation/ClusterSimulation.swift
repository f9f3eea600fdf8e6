@_spi(Testing) import Raft
@_spi(Testing) import RaftGroup

/// A seeded, deterministic simulation of a Raft cluster under faults (TigerBeetle's approach): the
/// production runtime, `RaftGroup` with its `RaftNode` core, on every node, over a simulated network that drops, duplicates, delays, reorders and partitions
/// messages, simulated disks that lose unsynced writes on a crash, clients proposing and reading
/// throughout, membership changes and leadership transfers. The invariant checker runs after every
/// event; after the faults heal, liveness is checked too. The same seed always replays the same run.
public final class ClusterSimulation {
  enum Event {
    case tick(slot: Int, incarnation: Int)
    /// Work a node's group deferred to a later turn of its thread (`GroupExecutor`).
    case work(slot: Int, incarnation: Int, id: UInt64)
    case deliver(Message, snapshot: MachineState?)
    case writeComplete(slot: Int, incarnation: Int)
    case snapshotReport(slot: Int, incarnation: Int, peer: NodeID, succeeded: Bool)
    case unreachableReport(slot: Int, incarnation: Int, peer: NodeID)
    case propose
    case read
    case partition
    case healPartition(generation: Int)
    case crash
    case restart(slot: Int)
    case crashNode(slot: Int, incarnation: Int)
    case membershipChange
    case transfer
    case heal
    case postHealCheck
    case byzantine
  }

  let options: SimulationOptions
  let faults: FaultProfile
  var rng: SplitMix64
  var now: UInt64 = 0
  var queue = EventQueue<Event>()
  var nodes: [SimulatedNode] = []
  var slotByID: [NodeID: Int] = [:]
  var checker = InvariantChecker()
  var trace: TraceRing
  var report: SimulationReport
  /// `blocked[from][to]`: messages on that link are lost.
  var blocked: [[Bool]]
  var partitionGeneration = 0
  var healed = false
  let healTime: UInt64
  var nextRequestID: UInt64 = 1
  var postHeal = PostHealProgress()
  var finished = false
  /// Genuine messages recently delivered, which the byzantine peer replays and mutates.
  var recentMessages: [Message] = []
  var recentMessagesNext = 0
  /// Deferred work by id, run by its `.work` event.
  var deferredWork: [UInt64: () -> Void] = [:]
  var nextWorkID: UInt64 = 0
  /// The first violation a group hook or the state machine saw; it ends the run after the event.
  var hookViolation: Violation?

  struct PostHealProgress {
    var leader: NodeID?
    var leaderTerm: UInt64 = 0
    var positions: [LogPosition] = []
    var leaderDeadline: UInt64 = 0
    var applyDeadline: UInt64 = 0
  }

  /// An application's view of the run (`SimulationObserver`), nil for none.
  let observer: (any SimulationObserver)?

  public init(options: SimulationOptions, observer: (any SimulationObserver)? = nil) {
    self.options = options
    self.observer = observer
    var rng = SplitMix64(seed: options.seed)
    faults = options.faults ?? FaultProfile.random(using: &rng)
    self.rng = rng
    trace = TraceRing(capacity: options.traceCapacity)
    report = SimulationReport(seed: options.seed, nodeCount: options.nodeCount)
    report.faults = faults.description
    let total = options.nodeCount + options.spareNodes
    blocked = Array(repeating: Array(repeating: false, count: total), count: total)
    healTime = UInt64(options.faultPhaseTicks) * options.tickMicros
    let initialVoters = (1...options.nodeCount).map { NodeID(UInt64($0)) }
    let bootstrap = RaftNode.bootstrap(Configuration(voters: initialVoters))
    for slot in 0..<total {
      let id = NodeID(UInt64(slot + 1))
      // Clocks drift by up to ±0.5%, well inside the lease safety margin.
      let drift = Int64(self.rng.next() % 101) - 50
      let tick = UInt64(Int64(options.tickMicros) + Int64(options.tickMicros) * drift / 10_000)
      let node = SimulatedNode(id: id, slot: slot, tickMicros: tick)
      if slot < options.nodeCount {
        node.disk.hardState = bootstrap.hardState
        node.disk.entries = bootstrap.entries
      }
      nodes.append(node)
      slotByID[id] = slot
    }
  }

  /// Runs to the end and reports. Never traps on a violation: it is returned in the report.
  public func run() -> SimulationReport {
    do {
      try start()
      while !finished, let (time, event) = queue.next() {
        precondition(time >= now, "time went backwards")
        now = time
        report.events += 1
        report.fingerprint = Fingerprint.combine(report.fingerprint, time)
        try handle(event)
        try throwHookViolation()
        observer?.eventProcessed(at: now, upNodes: nodes.filter(\.isUp).map(\.id))
      }
    } catch {
      report.violation = error
    }
    report.simulatedMicros = now

    report.trace = trace.lines
    return report
  }

  private func start() throws(Violation) {
    for node in nodes {
      try boot(node)
    }
    scheduleRecurring(.propose, every: faults.proposalIntervalTicks)
    scheduleRecurring(.read, every: faults.readIntervalTicks)
    scheduleRecurring(.partition, every: Double(faults.partitionIntervalTicks))
    scheduleRecurring(.crash, every: Double(faults.crashIntervalTicks))
    scheduleRecurring(.membershipChange, every: Double(faults.membershipChangeIntervalTicks))
    scheduleRecurring(.transfer, every: Double(faults.transferIntervalTicks))
    if options.byzantine != nil { scheduleRecurring(.byzantine, every: options.byzantineIntervalTicks) }
    queue.schedule(at: healTime, .heal)
  }

  /// Schedules the next occurrence of a recurring fault or client action during the fault phase,
  /// at a uniformly random delay averaging `ticks`.
  func scheduleRecurring(_ event: Event, every ticks: Double) {
    guard ticks > 0, !healed else { return }
    let mean = ticks * Double(options.tickMicros)
    let delay = UInt64(Double(random(1000)) / 1000 * 2 * mean) + 1
    guard now + delay < healTime else { return }
    queue.schedule(at: now + delay, event)
  }

  // MARK: - Randomness

  func random(_ bound: UInt64) -> UInt64 {
    precondition(bound > 0)
    return rng.next() % bound
  }

  func chance(_ probability: Double) -> Bool {
    probability > 0 && Double(rng.next() >> 11) / Double(1 << 53) < probability
  }

  func pick<T>(_ items: [T]) -> T? {
    items.isEmpty ? nil : items[Int(random(UInt64(items.count)))]
  }

  // MARK: - Nodes

  /// Starts (or restarts) a node from what its disk holds: the production runtime over this node's
  /// simulated world.
  func boot(_ node: SimulatedNode) throws(Violation) {
    precondition(!node.isUp)
    var raftOptions = RaftOptions(id: node.id, randomSeed: options.seed &+ UInt64(node.incarnation) &* 7919)
    raftOptions.electionTimeoutTicks = options.electionTimeoutTicks
    raftOptions.heartbeatTicks = options.heartbeatTicks
    raftOptions.compactionRetainEntries = faults.compactionRetainEntries
    raftOptions.maxInflightMessages = 8
    raftOptions.maxMessageBytes = faults.maxMessageBytes
    raftOptions.maxInflightBytes = 8 * faults.maxMessageBytes
    raftOptions.plantedBugs = options.plantedBugs
    let stored = node.disk.storedState
    let raft = RaftNode(options: raftOptions, stored: stored)
    // A joining server learns the members from the node it asks to join through (the server's
    // -join does the same); it hears from no one else before the configuration reaches it.
    raft.trustWhileJoining(nodes.map(\.id))
    var groupOptions = GroupOptions()
    groupOptions.tickNanoseconds = options.tickMicros * 1000
    groupOptions.electionTimeoutTicks = options.electionTimeoutTicks
    groupOptions.requestTimeoutNanoseconds =
      20 * UInt64(options.electionTimeoutTicks) * options.tickMicros * 1000
    groupOptions.snapshotThresholdEntries = faults.snapshotEveryEntries
    groupOptions.snapshotRetryNanoseconds = options.tickMicros * 1000
    groupOptions.plantedBugs = options.runtimeBugs
    let world = SimulatedWorld(simulation: self, node: node)
    let machine = makeMachine(node.disk.snapshotMachine, on: node)
    try checker.machineRestored(machine.state, by: node.id, at: now)
    observer?.node(node.id, restoredAt: machine.state.appliedIndex)
    node.group = RaftGroup(
      core: raft, machine: machine, options: groupOptions, clock: world, executor: world, storage: world,
      sink: world, snapshots: world, hooks: hooks(for: node))
    node.commitChecked = 0
    node.leaderWatermark = nil
    if node.incarnation > 0 {
      record(
        .restart(
          node.id,
          StoredStateSummary(
            hardState: stored.hardState, snapshotIndex: stored.snapshot.index, lastIndex: raft.lastIndex)))
    }
    let phase = random(node.tickMicros) + 1
    queue.schedule(at: now + phase, .tick(slot: node.slot, incarnation: node.incarnation))
    node.group?.start()
    try throwHookViolation()
  }

  /// A state machine for `node` that reports what it applies to the checker.
  func makeMachine(_ state: MachineState, on node: SimulatedNode) -> SimulatedMachine {
    SimulatedMachine(
      state,
      onApply: { [unowned self] entry, state in
        flag { () throws(Violation) in
          try checker.entryApplied(entry, digestAfter: state.digest, by: node.id, at: now)
        }
        observer?.node(node.id, applied: entry)
      },
      onGap: { [unowned self] entry, applied in
        flag { () throws(Violation) in
          throw Violation(
            kind: .stateMachineSafety,
            detail:
              "\(node.id)'s runtime handed \(entry.position) to a state machine that applied through \(applied)",
            time: now)
        }
      })
  }

  /// Records the first violation seen inside a hook (hooks cannot throw); the run ends after the event.
  func flag(_ check: () throws(Violation) -> Void) {
    do {
      try check()
    } catch {
      if hookViolation == nil { hookViolation = error }
    }
  }

  func throwHookViolation() throws(Violation) {
    if let hookViolation { throw hookViolation }
  }

  func crash(_ node: SimulatedNode) {
    guard node.isUp else { return }
    node.group = nil
    node.incarnation += 1
    observer?.nodeCrashed(node.id)
    report.crashes += 1
    // Writes not yet synced are lost, except that a prefix of the write stream may have reached
    // the disk anyway (and the separately written hard state may or may not have). Snapshot installs
    // and truncations are durable before anything after them, as RaftStorage guarantees.
    var surviving = 0
    if !node.pendingWrites.isEmpty && chance(faults.tornWriteProbability) {
      surviving = Int(random(UInt64(node.pendingWrites.count) + 1))
      for write in node.pendingWrites.prefix(surviving) { node.disk.apply(write) }
      if surviving < node.pendingWrites.count {
        let partial = node.pendingWrites[surviving]
        let keep = Int(random(UInt64(partial.entries.count) + 1))
        node.disk.apply(partial, entryLimit: keep, includeHardState: chance(0.5))
      }
    }
    record(.crash(node.id, survivingWrites: surviving, pendingWrites: node.pendingWrites.count))
    node.pendingWrites = []
  }

  /// The node that currently believes it leads with the highest term, if any.
  var currentLeader: SimulatedNode? {
    var best: SimulatedNode?
    for node in nodes {
      guard let raft = node.raft, raft.isLeader else { continue }
      if best == nil || raft.currentTerm > best!.raft!.currentTerm { best = node }
    }
    return best
  }

  func record(_ event: TraceEvent) {
    trace.record(now, event)
  }
}

/// An application's view of a run, for checks that live above Raft (the watch checks run a
/// multi-version store and watch hub per node on what each node applies). Every call comes in the
/// run's deterministic order, so an observer that draws from its own seeded generator replays
/// exactly with the run.
public protocol SimulationObserver: AnyObject {
  /// `node`'s state machine applied `entry`, the one after the last it applied or was restored to.
  func node(_ node: NodeID, applied entry: LogEntry)
  /// `node`'s state machine was rebuilt at `index`: booted from its disk, or a snapshot installed.
  func node(_ node: NodeID, restoredAt index: UInt64)
  /// `node` crashed: whatever it served in memory is gone.
  func nodeCrashed(_ node: NodeID)
  /// After every event of the run, with the nodes that are up: clients act here.
  func eventProcessed(at now: UInt64, upNodes: [NodeID])
}
