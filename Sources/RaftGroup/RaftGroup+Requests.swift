import Raft

extension RaftGroup {
  // MARK: - Time

  /// Called by the owner's timer about once per tick: advances the core by the ticks that passed on
  /// the clock, fails requests past their deadline, and runs a turn.
  public func tick() {
    guard !isStopped else { return }
    catchUpTicks()
    expireRequests()
    runTurn()
  }

  /// Advances the core by every tick interval that has passed on the monotonic clock since the last
  /// tick. Time in the core must track real elapsed time, not the number of timer callbacks: a process
  /// that was paused (SIGSTOP, a long stall, a starved CPU) would otherwise resume believing its
  /// leader lease still holds and its election timers barely moved. Called before every lease read too.
  func catchUpTicks() {
    let interval = options.tickNanoseconds
    let now = clock.nowNanoseconds
    guard now >= lastTickNanoseconds, now - lastTickNanoseconds >= interval else { return }
    let due = (now - lastTickNanoseconds) / interval
    // Past an election timeout more ticks change nothing; the cap keeps a long pause cheap.
    for _ in 0..<min(due, UInt64(4 * options.electionTimeoutTicks)) { core.tick() }
    lastTickNanoseconds += due * interval
  }

  var requestDeadline: UInt64 { clock.nowNanoseconds &+ options.requestTimeoutNanoseconds }

  /// Fails requests that waited longer than the request timeout.
  func expireRequests() {
    let now = clock.nowNanoseconds
    if proposals.values.contains(where: { $0.deadline < now }) {
      for (index, proposal) in proposals where proposal.deadline < now {
        proposals[index] = nil
        proposal.fail(.timedOut(.commit))
      }
    }
    if reads.values.contains(where: { $0.deadline < now }) {
      for (id, read) in reads where read.deadline < now {
        reads[id] = nil
        read.completion(.failure(.timedOut(.confirmation)))
      }
    }
    if readsAwaitingApply.contains(where: { $0.read.deadline < now }) {
      for entry in readsAwaitingApply where entry.read.deadline < now {
        entry.read.completion(.failure(.timedOut(.apply)))
      }
      readsAwaitingApply.removeAll { $0.read.deadline < now }
    }
  }

  // MARK: - Peers

  /// Hands a peer's message to the core; the turn that follows handles what it caused.
  @discardableResult
  public func step(_ message: Message) -> MessageRefusal? {
    guard !isStopped else { return nil }
    let refusal = core.step(message)
    scheduleTurn()
    return refusal
  }

  public func reportUnreachable(_ peer: NodeID) {
    guard !isStopped else { return }
    core.reportUnreachable(peer)
  }

  public func reportSnapshot(to peer: NodeID, succeeded: Bool) {
    guard !isStopped else { return }
    core.reportSnapshot(to: peer, succeeded: succeeded)
    scheduleTurn()
  }

  /// A snapshot stream from the leader finished: stage it and give the core its message. If the core
  /// declines it (it already has that much of the log), the staged data is thrown away.
  @discardableResult
  public func receiveSnapshot(_ message: Message, staged: any StagedSnapshot) -> MessageRefusal? {
    guard !isStopped else {
      staged.abort()
      return nil
    }
    let index = staged.metadata.index
    for (olderIndex, older) in stagedSnapshots where olderIndex <= index {
      older.abort()
      stagedSnapshots[olderIndex] = nil
    }
    stagedSnapshots[index] = staged
    let refusal = core.step(message)
    runTurn()
    if let unused = stagedSnapshots.removeValue(forKey: index) { unused.abort() }
    return refusal
  }

  // MARK: - Proposals

  /// Proposes a command on the leader. `completion` gets the state machine's output once the entry
  /// is committed and applied here, or an error (for which `outcomeIsUnknown` says whether it may
  /// still apply). Throws, having changed nothing, if the core refuses it at once.
  @discardableResult
  public func propose(
    _ command: [UInt8], completion: @escaping (Result<Machine.Output, GroupError>) -> Void
  ) throws(GroupError) -> LogPosition {
    if let stopReason { throw .stopped(stopReason) }
    guard core.isLeader else { throw .notLeader(leader: core.knownLeader) }
    let position: LogPosition
    do {
      position = try core.propose(command)
    } catch {
      throw .proposalRefused(error)
    }
    proposals[position.index] = PendingProposal(
      term: position.term, waiter: .command(completion), deadline: requestDeadline)
    scheduleTurn()
    return position
  }

  /// Proposes a membership change; `completion` runs once it is committed (see `propose`).
  @discardableResult
  public func proposeConfigurationChange(
    _ change: ConfigurationChange, completion: @escaping (Result<Void, GroupError>) -> Void
  ) throws(GroupError) -> LogPosition {
    if let stopReason { throw .stopped(stopReason) }
    guard core.isLeader else { throw .notLeader(leader: core.knownLeader) }
    let position: LogPosition
    do {
      position = try core.proposeConfigurationChange(change)
    } catch {
      throw .proposalRefused(error)
    }
    proposals[position.index] = PendingProposal(
      term: position.term, waiter: .configuration(completion), deadline: requestDeadline)
    scheduleTurn()
    return position
  }

  public func transferLeadership(to target: NodeID) throws(LeadershipTransferError) {
    try core.transferLeadership(to: target)
    scheduleTurn()
  }

  // MARK: - Reads

  /// A linearizable read on the leader: `completion` gets the read index once leadership is
  /// confirmed (by a quorum round, or by the lease for `.lease`) and the state machine has applied
  /// through it; the caller then reads the machine, on this thread.
  public func read(
    _ mode: ReadMode, completion: @escaping (Result<UInt64, GroupError>) -> Void
  ) throws(GroupError) {
    if let stopReason { throw .stopped(stopReason) }
    guard core.isLeader else { throw .notLeader(leader: core.knownLeader) }
    let id = nextReadID
    nextReadID += 1
    if mode == .lease { catchUpTicks() }  // A lease is only as good as the time it is checked at.
    reads[id] = PendingRead(completion: completion, deadline: requestDeadline)
    core.requestRead(id: id, mode: mode)
    scheduleTurn()
  }

  func readConfirmed(_ state: ReadState) {
    guard let read = reads.removeValue(forKey: state.requestID) else { return }
    switch state.result {
    case .ready(let index):
      if machine.appliedIndex >= index {
        read.completion(.success(index))
      } else {
        let position = readsAwaitingApply.firstIndex { $0.index > index } ?? readsAwaitingApply.endIndex
        readsAwaitingApply.insert((index, read), at: position)
      }
    case .failed(let failure):
      read.completion(.failure(.readFailed(failure)))
    }
  }

  func serveReadsAwaitingApply() {
    guard let first = readsAwaitingApply.first, first.index <= machine.appliedIndex else { return }
    let ready = readsAwaitingApply.prefix { $0.index <= machine.appliedIndex }.count
    for entry in readsAwaitingApply[..<ready] { entry.read.completion(.success(entry.index)) }
    readsAwaitingApply.removeFirst(ready)
  }
}
