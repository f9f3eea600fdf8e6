@_spi(Testing) import Raft

extension ClusterSimulation {
  func handle(_ event: Event) throws(Violation) {
    switch event {
    case .tick(let slot, let incarnation):
      let node = nodes[slot]
      guard let raft = node.raft, node.incarnation == incarnation else { return }
      raft.tick()
      queue.schedule(at: now + node.tickMicros, .tick(slot: slot, incarnation: incarnation))
      try process(node)

    case .deliver(let message, let snapshot):
      try deliver(message, snapshot: snapshot)

    case .writeComplete(let slot, let incarnation):
      let node = nodes[slot]
      guard let raft = node.raft, node.incarnation == incarnation, !node.pendingWrites.isEmpty else { return }
      let write = node.pendingWrites.removeFirst()
      node.disk.apply(write)
      for message in write.messagesAfterPersist { send(message, from: node) }
      if let position = write.persistedThrough { raft.persisted(through: position) }
      try process(node)

    case .snapshotReport(let slot, let incarnation, let peer, let succeeded):
      let node = nodes[slot]
      guard let raft = node.raft, node.incarnation == incarnation else { return }
      raft.reportSnapshot(to: peer, succeeded: succeeded)
      try process(node)

    case .unreachableReport(let slot, let incarnation, let peer):
      let node = nodes[slot]
      guard let raft = node.raft, node.incarnation == incarnation else { return }
      raft.reportUnreachable(peer)
      try process(node)

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

  // MARK: - The application loop around each core

  /// Drains a node's `Ready`s the way the server will: check, send, persist, apply, answer reads.
  func process(_ node: SimulatedNode) throws(Violation) {
    while let raft = node.raft, raft.hasReady {
      let ready = raft.takeReady()
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
      if let snapshot = ready.snapshot {
        guard let staged = node.stagedSnapshot, staged.metadata == snapshot else {
          preconditionFailure("\(node.id) accepted snapshot \(snapshot.index) that was never received")
        }
        try checker.machineRestored(staged.machine, by: node.id, at: now)
        node.machine = staged.machine
        node.snapshot = staged
        node.stagedSnapshot = nil
        report.snapshotsInstalled += 1
        record(.snapshotInstalled(node.id, index: snapshot.index))
      }
      if let first = ready.entries.first {
        try checker.entriesAppended(
          ready.entries, previousTerm: raft.term(at: first.index - 1), by: node.id, at: now)
      }
      for message in ready.messages { send(message, from: node) }
      if ready.needsPersistence || !node.pendingWrites.isEmpty {
        let write = PendingWrite(
          hardState: ready.hardState, snapshot: ready.snapshot.map { ($0, node.machine) },
          entries: ready.entries,
          messagesAfterPersist: ready.messagesAfterPersist, persistedThrough: ready.persistedThrough)
        node.pendingWrites.append(write)
        // An fsync takes 0.1–2 ms; writes complete in the order they were issued.
        let completion = max(now + 100 + random(1900), node.lastWriteCompletion + 1)
        node.lastWriteCompletion = completion
        queue.schedule(at: completion, .writeComplete(slot: node.slot, incarnation: node.incarnation))
      } else {
        for message in ready.messagesAfterPersist { send(message, from: node) }
      }
      for entry in ready.committedEntries {
        try apply(entry, on: node)
      }
      for state in ready.readStates {
        try answerRead(state, on: node)
      }
      try checker.commitObserved(raft, from: node.commitChecked + 1, at: now)
      node.commitChecked = raft.commitIndex
      try checkLeaderAppendOnly(node, raft)
      maybeSnapshot(node, raft)
    }
  }

  func apply(_ entry: LogEntry, on node: SimulatedNode) throws(Violation) {
    node.machine.apply(entry)
    try checker.entryApplied(entry, digestAfter: node.machine.digest, by: node.id, at: now)
    if let term = node.proposals.removeValue(forKey: entry.index), term == entry.term {
      report.proposalsAcknowledged += 1
    }
  }

  func answerRead(_ state: ReadState, on node: SimulatedNode) throws(Violation) {
    guard let required = node.reads.removeValue(forKey: state.requestID) else { return }
    record(.readAnswered(node.id, requestID: state.requestID, state.result, required: required))
    if case .ready(let index) = state.result {
      try checker.readAnswered(
        index: index, requiredIndex: required, by: node.id, requestID: state.requestID, at: now)
      report.readsServed += 1
    }
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

  /// Takes a snapshot every `snapshotEveryEntries` applied entries and lets the core compact.
  func maybeSnapshot(_ node: SimulatedNode, _ raft: RaftNode) {
    let applied = node.machine.appliedIndex
    guard applied >= raft.snapshotMetadata.index + faults.snapshotEveryEntries,
      let metadata = raft.snapshotMetadata(at: applied)
    else { return }
    node.disk.storeLocalSnapshot(metadata, machine: node.machine, retain: faults.compactionRetainEntries)
    node.snapshot = (metadata, node.machine)
    let compacted = raft.compactLog(through: applied)
    precondition(compacted, "\(node.id) could not compact through applied index \(applied)")
    record(.snapshotTaken(node.id, index: applied))
  }

  // MARK: - Network

  func send(_ message: Message, from sender: SimulatedNode) {
    guard let target = slotByID[message.to] else { return }
    var snapshot: MachineState?
    if case .installSnapshot(let metadata) = message.body {
      precondition(sender.snapshot.metadata == metadata, "\(sender.id) sends a snapshot it does not hold")
      snapshot = sender.snapshot.machine
    }
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
    guard let raft = target.raft else {
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
    if case .installSnapshot(let metadata) = message.body, let snapshot {
      target.stagedSnapshot = (metadata, snapshot)
      queue.schedule(
        at: now + 1,
        .snapshotReport(slot: senderSlot, incarnation: sender.incarnation, peer: message.to, succeeded: true))
    }
    if let refusal = raft.step(message) {
      // A genuine message refused: legitimate only for stale senders (a removed member, say); the
      // trace shows it for diagnosis.
      record(.note("\(message.to) refused \(message): \(refusal)"))
    }
    try process(target)
  }
}
