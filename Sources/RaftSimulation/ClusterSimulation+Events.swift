@_spi(Testing) import Raft
import RaftGroup

extension ClusterSimulation {
  func handle(_ event: Event) throws(Violation) {
    switch event {
    case .tick(let slot, let incarnation):
      let node = nodes[slot]
      guard let group = node.group, node.incarnation == incarnation else { return }
      queue.schedule(at: now + node.tickMicros, .tick(slot: slot, incarnation: incarnation))
      group.tick()

    case .work(let slot, let incarnation, let id):
      guard let work = deferredWork.removeValue(forKey: id), nodes[slot].incarnation == incarnation,
        nodes[slot].isUp
      else { return }
      work()

    case .deliver(let message, let snapshot):
      try deliver(message, snapshot: snapshot)

    case .writeComplete(let slot, let incarnation):
      let node = nodes[slot]
      guard node.isUp, node.incarnation == incarnation, !node.pendingWrites.isEmpty else { return }
      let write = node.pendingWrites.removeFirst()
      node.disk.apply(write)
      write.completion(.success(()))

    case .snapshotReport(let slot, let incarnation, let peer, let succeeded):
      let node = nodes[slot]
      guard let group = node.group, node.incarnation == incarnation else { return }
      group.reportSnapshot(to: peer, succeeded: succeeded)

    case .unreachableReport(let slot, let incarnation, let peer):
      let node = nodes[slot]
      guard let group = node.group, node.incarnation == incarnation else { return }
      group.reportUnreachable(peer)

    case .propose:
      scheduleRecurring(.propose, every: faults.proposalIntervalTicks)
      try clientPropose()

    case .read:
      scheduleRecurring(.read, every: faults.readIntervalTicks)
      try clientRead()

    case .partition:
      scheduleRecurring(.partition, every: Double(faults.partitionIntervalTicks))
      startPartition()

    case .healPartition(let generation):
      if generation == partitionGeneration { clearPartitions() }

    case .crash:
      scheduleRecurring(.crash, every: Double(faults.crashIntervalTicks))
      try crashSomething()

    case .crashNode(let slot, let incarnation):
      let node = nodes[slot]
      guard !healed, node.incarnation == incarnation else { return }
      crash(node)
      let downtime = (1 + random(UInt64(2 * faults.downtimeTicks))) * options.tickMicros
      queue.schedule(at: now + downtime, .restart(slot: node.slot))

    case .restart(let slot):
      let node = nodes[slot]
      if !node.isUp { try boot(node) }

    case .membershipChange:
      scheduleRecurring(.membershipChange, every: Double(faults.membershipChangeIntervalTicks))
      try changeMembership()

    case .transfer:
      scheduleRecurring(.transfer, every: Double(faults.transferIntervalTicks))
      try transferLeadership()

    case .heal:
      try heal()

    case .byzantine:
      scheduleRecurring(.byzantine, every: options.byzantineIntervalTicks)
      try sendByzantineMessage()

    case .postHealCheck:
      try checkPostHeal()
    }
  }

  // MARK: - The simulated world of each group

  /// What each node's group reports: the checks the simulation makes on the production runtime.
  func hooks(for node: SimulatedNode) -> GroupHooks<SimulatedMachine> {
    var hooks = GroupHooks<SimulatedMachine>()
    hooks.readyTaken = { [unowned self] ready in
      flag { () throws(Violation) in try readyTaken(ready, by: node) }
    }
    hooks.turnFinished = { [unowned self] in
      flag { () throws(Violation) in try turnFinished(node) }
    }
    hooks.machineRestored = { [unowned self] machine, snapshot in
      report.snapshotsInstalled += 1
      record(.snapshotInstalled(node.id, index: snapshot.index))
      flag { () throws(Violation) in try checker.machineRestored(machine.state, by: node.id, at: now) }
      observer?.node(node.id, restoredAt: machine.state.appliedIndex)
    }
    hooks.snapshotSaved = { [unowned self] metadata in record(.snapshotTaken(node.id, index: metadata.index))
    }
    hooks.failed = { [unowned self] reason in
      flag { () throws(Violation) in
        throw Violation(
          kind: .stateMachineSafety, detail: "\(node.id)'s runtime failed: \(reason)", time: now)
      }
    }
    return hooks
  }

  private func readyTaken(_ ready: Ready, by node: SimulatedNode) throws(Violation) {
    guard let raft = node.raft else { return }
    if let soft = ready.softState {
      record(.softState(node.id, soft))
      if soft.role == .leader {
        report.leaderElections += 1
        try checker.leaderElected(raft, at: now)
        if !healed && chance(faults.newLeaderCrashProbability) {
          let delay = 1 + random(UInt64(faults.newLeaderCrashWithinTicks * Double(options.tickMicros)))
          queue.schedule(at: now + delay, .crashNode(slot: node.slot, incarnation: node.incarnation))
        }
      }
    }
    if let first = ready.entries.first {
      try checker.entriesAppended(
        ready.entries, previousTerm: raft.term(at: first.index - 1), by: node.id, at: now)
    }
  }

  private func turnFinished(_ node: SimulatedNode) throws(Violation) {
    guard let raft = node.raft else { return }
    try checker.commitObserved(raft, from: node.commitChecked + 1, at: now)
    node.commitChecked = raft.commitIndex
    try checkLeaderAppendOnly(node, raft)
  }

  /// Runs a node's turn at once (after a client request or a fault acted on its group).
  func process(_ node: SimulatedNode) throws(Violation) {
    node.group?.runTurn()
    try throwHookViolation()
  }

  /// `GroupExecutor`: work for a later turn of the node's thread.
  func schedule(_ work: @escaping () -> Void, on node: SimulatedNode, incarnation: Int, afterMicros: UInt64) {
    let id = nextWorkID
    nextWorkID += 1
    deferredWork[id] = work
    queue.schedule(at: now + afterMicros, .work(slot: node.slot, incarnation: incarnation, id: id))
  }

  /// `GroupStorage`: an fsync takes 0.1–2 ms; writes complete in the order they were issued.
  func persist(
    _ write: GroupWrite, on node: SimulatedNode,
    completion: @escaping (Result<Void, GroupStorageFailure>) -> Void
  ) {
    var snapshot: (SnapshotMetadata, MachineState)?
    if let staged = write.snapshot {
      guard let staged = staged as? SimulatedStagedSnapshot else {
        preconditionFailure("\(node.id) persists a snapshot the simulator did not stage")
      }
      snapshot = (staged.metadata, staged.machine)
    }
    node.pendingWrites.append(
      PendingWrite(
        hardState: write.hardState, snapshot: snapshot, entries: write.entries, completion: completion))
    let completionTime = max(now + 100 + random(1900), node.lastWriteCompletion + 1)
    node.lastWriteCompletion = completionTime
    queue.schedule(at: completionTime, .writeComplete(slot: node.slot, incarnation: node.incarnation))
  }

  /// `GroupSnapshotStore.save`: the node's own snapshot, stored with its log compacted below it.
  func saveSnapshot(_ machine: MachineState, at metadata: SnapshotMetadata, on node: SimulatedNode) {
    precondition(
      machine.appliedIndex == metadata.index, "\(node.id) snapshots \(metadata) from another index")
    node.disk.storeLocalSnapshot(metadata, machine: machine, retain: faults.compactionRetainEntries)
  }

  /// `GroupSnapshotStore.load`: reads back the snapshot a write installed; loading takes 0.1–5 ms,
  /// during which the group must hold back what comes after it.
  func loadSnapshot(
    _ metadata: SnapshotMetadata, on node: SimulatedNode, incarnation: Int,
    completion: @escaping (Result<SimulatedMachine, GroupStorageFailure>) -> Void
  ) {
    guard node.disk.snapshot == metadata else {
      preconditionFailure(
        "\(node.id) loads snapshot \(metadata.index), but its disk holds \(node.disk.snapshot.index)")
    }
    let machine = makeMachine(node.disk.snapshotMachine, on: node)
    schedule(
      { completion(.success(machine)) }, on: node, incarnation: incarnation, afterMicros: 100 + random(4900))
  }

  /// `GroupMessageSink.sendSnapshot`: the snapshot stored on the sender's disk goes with the message.
  func sendSnapshot(_ message: Message, metadata: SnapshotMetadata, from sender: SimulatedNode) {
    guard sender.disk.snapshot == metadata else {
      // Replaced or not yet durable: the server's transport fails to open it and reports failure.
      queue.schedule(
        at: now + 1,
        .snapshotReport(
          slot: sender.slot, incarnation: sender.incarnation, peer: message.to, succeeded: false))
      return
    }
    send(message, from: sender, snapshot: sender.disk.snapshotMachine)
  }

  /// Leaders only append: while a node leads a term, its log keeps every entry it had.
  func checkLeaderAppendOnly(_ node: SimulatedNode, _ raft: RaftNode) throws(Violation) {
    guard raft.isLeader else {
      node.leaderWatermark = nil
      return
    }
    let last = LogPosition(index: raft.lastIndex, term: raft.term(at: raft.lastIndex) ?? 0)
    if let mark = node.leaderWatermark, mark.term == raft.currentTerm {
      let kept = raft.term(at: mark.position.index)
      if raft.lastIndex < mark.position.index || (kept != nil && kept != mark.position.term) {
        throw Violation(
          kind: .leaderAppendOnly,
          detail: "\(node.id) leading term \(mark.term) had \(mark.position) and now ends at \(last)",
          time: now)
      }
    }
    node.leaderWatermark = (raft.currentTerm, last)
  }

  // MARK: - Network

  func send(_ message: Message, from sender: SimulatedNode, snapshot: MachineState? = nil) {
    guard let target = slotByID[message.to] else { return }
    if !healed {
      if blocked[sender.slot][target] || chance(faults.dropProbability) {
        record(.drop(message, reason: "network"))
        reportLoss(of: message, from: sender)
        return
      }
    }
    let copies = !healed && chance(faults.duplicateProbability) ? 2 : 1
    for _ in 0..<copies {
      var delay = 100 + random(1400)
      if !healed && chance(faults.longDelayProbability) {
        delay += random(UInt64(faults.longDelayTicks) * options.tickMicros)
      }
      queue.schedule(at: now + delay, .deliver(message, snapshot: snapshot))
    }
  }

  /// A real transport notices a broken connection or a failed snapshot stream; tell the sender.
  func reportLoss(of message: Message, from sender: SimulatedNode) {
    let at = now + 5 * options.tickMicros
    switch message.body {
    case .installSnapshot:
      queue.schedule(
        at: at,
        .snapshotReport(
          slot: sender.slot, incarnation: sender.incarnation, peer: message.to, succeeded: false))
    case .appendEntries where chance(0.3):
      queue.schedule(
        at: at, .unreachableReport(slot: sender.slot, incarnation: sender.incarnation, peer: message.to))
    default:
      break
    }
  }

  func deliver(_ message: Message, snapshot: MachineState?) throws(Violation) {
    guard let targetSlot = slotByID[message.to], let senderSlot = slotByID[message.from] else { return }
    let target = nodes[targetSlot]
    let sender = nodes[senderSlot]
    guard let group = target.group else {
      record(.drop(message, reason: "receiver down"))
      reportLoss(of: message, from: sender)
      return
    }
    if !healed && blocked[senderSlot][targetSlot] {
      record(.drop(message, reason: "partitioned in flight"))
      reportLoss(of: message, from: sender)
      return
    }
    report.messagesDelivered += 1
    report.fingerprint = Fingerprint.combine(
      report.fingerprint, message.from.rawValue << 32 | message.to.rawValue)
    record(.deliver(message))
    if options.byzantine != nil { remember(message) }
    var refusal: MessageRefusal?
    if case .installSnapshot(let metadata) = message.body, let snapshot {
      queue.schedule(
        at: now + 1,
        .snapshotReport(slot: senderSlot, incarnation: sender.incarnation, peer: message.to, succeeded: true))
      refusal = group.receiveSnapshot(
        message, staged: SimulatedStagedSnapshot(metadata: metadata, machine: snapshot))
    } else {
      refusal = group.step(message)
    }
    if let refusal {
      // A genuine message refused: legitimate only for stale senders (a removed member, say); the
      // trace shows it for diagnosis.
      record(.note("\(message.to) refused \(message): \(refusal)"))
    }
    try throwHookViolation()
  }
}
