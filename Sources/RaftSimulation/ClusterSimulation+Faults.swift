@_spi(Testing) import Raft
import RaftGroup

// Clients, fault injection, and the liveness check after healing.
extension ClusterSimulation {
  // MARK: - Clients

  /// A client sends a write, usually to the leader, sometimes to whichever node it knows.
  func clientPropose() throws(Violation) {
    let upNodes = nodes.filter(\.isUp)
    guard let node = chance(0.8) ? (currentLeader ?? pick(upNodes)) : pick(upNodes), let group = node.group
    else {
      return
    }
    let id = nextRequestID
    nextRequestID += 1
    var command = withUnsafeBytes(of: id.bigEndian) { Array($0) }
    command.append(contentsOf: (0..<random(48)).map { UInt8(truncatingIfNeeded: $0 &+ id) })
    do {
      let position = try group.propose(command, completion: proposalAnswered)
      report.proposalsAccepted += 1
      record(.propose(node.id, position))
    } catch {
      // A real client would follow the redirect to the leader or retry later.
    }
    try process(node)
  }

  /// A client reads at some node, by ReadIndex or lease. The checker remembers the highest index
  /// committed anywhere at this instant: the answer must not be older.
  func clientRead() throws(Violation) {
    let upNodes = nodes.filter(\.isUp)
    guard let node = chance(0.6) ? (currentLeader ?? pick(upNodes)) : pick(upNodes), let group = node.group
    else {
      return
    }
    let id = nextRequestID
    nextRequestID += 1
    let required = checker.maxCommitted
    do {
      try group.read(chance(0.3) ? .lease : .readIndex) { [unowned self] result in
        readAnswered(result, id: id, required: required, on: node)
      }
    } catch {
      // Not the leader: a real client would follow the redirect.
    }
    try process(node)
  }

  func proposalAnswered(_ result: Result<Void, GroupError>) {
    if case .success = result { report.proposalsAcknowledged += 1 }
  }

  /// A read the group answered: its index must cover every write committed before it began, and the
  /// state machine must have applied through it (what the client then reads).
  func readAnswered(
    _ result: Result<UInt64, GroupError>, id: UInt64, required: UInt64, on node: SimulatedNode
  ) {
    switch result {
    case .success(let index):
      record(.readAnswered(node.id, requestID: id, .ready(index: index), required: required))
      flag { () throws(Violation) in
        try checker.readAnswered(index: index, requiredIndex: required, by: node.id, requestID: id, at: now)
        try checker.readAnswered(
          index: node.appliedIndex, requiredIndex: index, by: node.id, requestID: id, at: now)
      }
      report.readsServed += 1
    case .failure(let error):
      record(.note("\(node.id) read #\(id) failed: \(error)"))
    }
  }

  // MARK: - Faults

  func startPartition() {
    let count = nodes.count
    clearPartitions()
    partitionGeneration += 1
    report.partitions += 1
    let leaderSlot = currentLeader?.slot
    var kind: String
    switch random(4) {
    case 0:
      // Isolate one node, usually the leader.
      let victim = (chance(0.6) ? leaderSlot : nil) ?? Int(random(UInt64(count)))
      for other in 0..<count where other != victim {
        blocked[victim][other] = true
        blocked[other][victim] = true
      }
      kind = "isolate \(nodes[victim].id)"
    case 1:
      // Split into two groups at random.
      let side = (0..<count).map { _ in chance(0.5) }
      for a in 0..<count {
        for b in 0..<count where side[a] != side[b] { blocked[a][b] = true }
      }
      kind = "split \(zip(nodes, side).filter { $0.1 }.map { "\($0.0.id)" })"
    case 2:
      // One-way loss: some links drop in one direction only.
      var links: [String] = []
      for _ in 0..<(1 + random(UInt64(count))) {
        let a = Int(random(UInt64(count)))
        let b = Int(random(UInt64(count)))
        if a != b {
          blocked[a][b] = true
          links.append("\(nodes[a].id)->\(nodes[b].id)")
        }
      }
      kind = "one-way \(links)"
    default:
      // Bridge: two groups that cannot talk, and one node that talks to both.
      let bridge = (chance(0.5) ? leaderSlot : nil) ?? Int(random(UInt64(count)))
      let side = (0..<count).map { _ in chance(0.5) }
      for a in 0..<count where a != bridge {
        for b in 0..<count where b != bridge && side[a] != side[b] { blocked[a][b] = true }
      }
      kind = "bridge via \(nodes[bridge].id)"
    }
    record(.note("PARTITION \(kind)"))
    let duration = (1 + random(UInt64(2 * faults.partitionDurationTicks))) * options.tickMicros
    queue.schedule(at: now + duration, .healPartition(generation: partitionGeneration))
  }

  func clearPartitions() {
    for a in blocked.indices {
      for b in blocked[a].indices { blocked[a][b] = false }
    }
    record(.note("partition healed"))
  }

  func crashSomething() throws(Violation) {
    let victims: [SimulatedNode]
    if chance(faults.crashAllProbability) {
      victims = nodes.filter(\.isUp)
    } else if let one = (chance(0.4) ? currentLeader : nil) ?? pick(nodes.filter(\.isUp)) {
      victims = [one]
    } else {
      return
    }
    for node in victims {
      crash(node)
      let downtime = (1 + random(UInt64(2 * faults.downtimeTicks))) * options.tickMicros
      queue.schedule(at: now + downtime, .restart(slot: node.slot))
    }
  }

  /// One single-server change at the leader: add a spare or removed server (as learner or voter),
  /// promote a learner, or remove a member (sometimes the leader itself).
  func changeMembership() throws(Violation) {
    guard let leader = currentLeader, let group = leader.group else { return }
    let raft = group.core
    let configuration = raft.configuration
    let outsiders = nodes.filter { !configuration.contains($0.id) }.map(\.id)
    let learners = configuration.learners
    let voterCount = configuration.voterCount
    var candidates: [ConfigurationChange] = []
    if let learner = pick(learners) { candidates.append(ConfigurationChange(.promoteLearner, learner)) }
    if let outsider = pick(outsiders) {
      candidates.append(ConfigurationChange(chance(0.5) ? .addLearner : .addVoter, outsider))
    }
    if voterCount > max(1, options.nodeCount - 1), let member = pick(configuration.members.map(\.id)) {
      candidates.append(ConfigurationChange(.removeMember, member))
    }
    guard let change = pick(candidates) else { return }
    var accepted = true
    do {
      try group.proposeConfigurationChange(change) { _ in }
      report.membershipChanges += 1
    } catch {
      accepted = false
    }
    record(.configurationChange(leader.id, change, accepted: accepted))
    try process(leader)
  }

  func transferLeadership() throws(Violation) {
    guard let leader = currentLeader, let group = leader.group,
      let target = pick(group.core.configuration.voters.filter { $0 != leader.id })
    else { return }
    do {
      try group.transferLeadership(to: target)
      report.leadershipTransfers += 1
      record(.transfer(from: leader.id, to: target))
    } catch {}
    try process(leader)
  }

  // MARK: - Healing and liveness

  /// Ends the fault phase: the network becomes reliable and every crashed node restarts.
  func heal() throws(Violation) {
    healed = true
    clearPartitions()
    record(.note("HEAL: faults stop, crashed nodes restart"))
    for node in nodes where !node.isUp {
      try boot(node)
    }
    let tick = options.tickMicros
    postHeal.leaderDeadline = now + UInt64(options.leaderDeadlineTicks) * tick
    // Messages sent before the heal (a TimeoutNow, a delayed vote) may still land; look once they
    // have drained.
    queue.schedule(at: now + UInt64(2 * options.electionTimeoutTicks) * tick, .postHealCheck)
  }

  func checkPostHeal() throws(Violation) {
    let tick = options.tickMicros
    defer { if !finished { queue.schedule(at: now + tick, .postHealCheck) } }
    guard let leaderID = postHeal.leader else {
      if let leader = stableLeader() {
        postHeal.leader = leader.id
        postHeal.leaderTerm = leader.raft!.currentTerm
        postHeal.applyDeadline = now + UInt64(options.applyDeadlineTicks) * tick
        record(.note("stable leader \(leader.id) in term \(postHeal.leaderTerm)"))
      } else if now > postHeal.leaderDeadline {
        throw Violation(
          kind: .livenessNoLeader,
          detail: "no stable leader \(options.leaderDeadlineTicks) ticks after healing; "
            + nodes.map { "\($0.id):\($0.raft.map { "\($0.currentRole) t\($0.currentTerm)" } ?? "down")" }
            .joined(separator: " "),
          time: now)
      }
      return
    }
    let node = nodes[slotByID[leaderID]!]
    guard let raft = node.raft, raft.isLeader, raft.currentTerm == postHeal.leaderTerm else {
      throw Violation(
        kind: .livenessNoLeader, detail: "leader \(leaderID) lost leadership after healing, with no faults",
        time: now)
    }
    if postHeal.positions.count < options.postHealProposals {
      let id = nextRequestID
      nextRequestID += 1
      if let position = try? node.group?.propose(
        withUnsafeBytes(of: id.bigEndian) { Array($0) }, completion: proposalAnswered)
      {
        postHeal.positions.append(position)
        report.proposalsAccepted += 1
      }
      try process(node)
      return
    }
    let lastIndex = postHeal.positions.last!.index
    let members = raft.configuration.members.map(\.id)
    let lagging = members.filter { nodes[slotByID[$0]!].appliedIndex < lastIndex }
    let uncommitted = postHeal.positions.filter { checker.committedTerm(at: $0.index) != $0.term }
    if lagging.isEmpty && uncommitted.isEmpty {
      finished = true
      record(.note("liveness verified: \(postHeal.positions.count) proposals applied on \(members)"))
      return
    }
    if now > postHeal.applyDeadline {
      throw Violation(
        kind: .livenessNotApplied,
        detail: "after healing, members \(lagging) have not applied through \(lastIndex); "
          + "uncommitted proposals: \(uncommitted)",
        time: now)
    }
  }

  /// A leader whose no-op has committed, with no membership change or transfer in flight, that a
  /// quorum of its voters follows.
  func stableLeader() -> SimulatedNode? {
    guard let leader = currentLeader, let raft = leader.raft else { return nil }
    let status = raft.status
    guard raft.term(at: raft.commitIndex) == raft.currentTerm, status.leadershipTransferTarget == nil,
      raft.configuration == raft.committedConfiguration
    else { return nil }
    let configuration = raft.configuration
    let followers = configuration.voters.filter { voter in
      guard let other = nodes[slotByID[voter]!].raft else { return false }
      return other.knownLeader == leader.id && other.currentTerm == raft.currentTerm
    }
    return followers.count >= configuration.quorum ? leader : nil
  }
}
