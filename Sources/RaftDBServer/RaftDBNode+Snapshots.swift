import Foundation
import KVStore
import Logging
import Raft
import RaftStorage
import RaftTransport

#if canImport(Glibc)
  import Glibc
#endif

/// Hands a state machine built on a background thread to the node's loop.
private final class MachineBox: @unchecked Sendable {
  // Unchecked: the machine is built entirely on one background thread, then handed to the loop and
  // never touched by that thread again.
  let machine: KVStateMachine
  init(_ machine: KVStateMachine) { self.machine = machine }
}

extension RaftDBNode {
  /// Takes a snapshot every `snapshotThreshold` applied entries or `snapshotThresholdBytes` applied
  /// bytes, whichever comes first. The state machine's frozen copy costs
  /// O(1), and serializing it happens on a background thread, so writes keep flowing meanwhile.
  func maybeTakeSnapshot() {
    let applied = machine.appliedIndex
    let lastSnapshot = raft.snapshotMetadata.index
    guard !snapshotInProgress, !stopped, applied > lastSnapshot,
      applied >= lastSnapshot + options.snapshotThreshold
        || appliedBytesSinceSnapshot >= options.snapshotThresholdBytes,
      let metadata = raft.snapshotMetadata(at: applied)
    else { return }
    snapshotInProgress = true
    appliedBytesSinceSnapshot = 0
    let frozen = machine.snapshot()
    let writer = self.writer
    DispatchQueue.global(qos: .utility).async {
      let start = ContinuousClock.now
      let outcome: Result<Void, any Error> = Result {
        let sink = try writer.withStorage { try $0.snapshots.beginWrite(metadata) }
        do {
          try frozen.serialize(chunkBytes: 1 << 20) { chunk in try sink.write(chunk) }
          try writer.withStorage { _ in try sink.commit() }
        } catch {
          writer.withStorage { _ in sink.abort() }
          throw error
        }
        try writer.withStorage { try $0.compact(through: metadata.index) }
      }
      let elapsed = ContinuousClock.now - start
      self.loop.execute {
        switch outcome {
        case .success:
          self.raft.compactLog(through: metadata.index)
          releaseFreedMemory()
          self.metrics.snapshotTakeDuration.recordNanoseconds(elapsed.nanoseconds)
          self.logger.info(
            "snapshot taken", metadata: ["index": "\(metadata.index)", "duration": "\(elapsed)"])
          self.snapshotInProgress = false
        case .failure(let error):
          self.logger.error("snapshot at \(metadata.index) failed: \(error); retrying in 10 seconds")
          self.loop.scheduleTask(in: .seconds(10)) { self.snapshotInProgress = false }
        }
      }
    }
  }

  /// Streams a stored snapshot to a follower that is too far behind for the log.
  func sendSnapshot(_ message: Message, metadata: SnapshotMetadata) {
    do {
      let source = try writer.withStorage { try $0.snapshots.open(metadata) }
      logger.info("sending snapshot \(metadata.index) to \(name(of: message.to))")
      transport.sendSnapshot(message, source: source)
    } catch {
      logger.error("cannot open snapshot \(metadata.index) to send: \(error)")
      raft.reportSnapshot(to: message.to, succeeded: false)
    }
  }

  /// Rebuilds the state machine from an installed snapshot on a background thread, then swaps it in
  /// on the loop and continues. Nothing after the snapshot applies until then (the core hands out
  /// entries only once the snapshot is acknowledged as persisted, which happens in `then`).
  func restoreMachine(from snapshot: SnapshotMetadata, then continuation: @escaping @Sendable () -> Void) {
    let writer = self.writer
    let limits = machineLimits
    DispatchQueue.global(qos: .userInitiated).async {
      let start = ContinuousClock.now
      let outcome: Result<MachineBox, any Error> = Result {
        let source = try writer.withStorage { try $0.snapshots.open(snapshot) }
        defer { source.close() }
        let machine = KVStateMachine(limits: limits)
        try machine.restore(appliedIndex: snapshot.index) { try source.read(maxBytes: 1 << 20) }
        return MachineBox(machine)
      }
      let elapsed = ContinuousClock.now - start
      self.loop.execute {
        switch outcome {
        case .success(let box):
          self.machine = box.machine
          self.metrics.snapshotInstallDuration.recordNanoseconds(elapsed.nanoseconds)
          self.logger.info("installed snapshot from the leader", metadata: ["index": "\(snapshot.index)"])
          // Writes this node was waiting on below the snapshot can no longer be matched to results.
          for (index, proposal) in self.proposals where index <= snapshot.index {
            self.proposals[index] = nil
            let error = NodeError.outcomeUnknown("replaced by a snapshot before the result was known; retry")
            switch proposal.waiter {
            case .write(let promise): promise.fail(error)
            case .configuration(let promise): promise.fail(error)
            }
          }
          self.serveReadsAwaitingApply()
          continuation()
        case .failure(let error):
          self.fail("could not restore snapshot \(snapshot.index): \(error)")
        }
      }
    }
  }

  var machineLimits: KVLimits {
    var limits = KVLimits()
    limits.maxKeyBytes = options.maxKeyBytes
    limits.maxValueBytes = options.maxValueBytes
    return limits
  }
}

extension Duration {
  var nanoseconds: Int64 {
    components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
  }
}

// MARK: - Transport callbacks

extension RaftDBNode: TransportDelegate {
  public func transportReceived(_ messages: [Message]) {
    loop.execute {
      guard !self.stopped else { return }
      for message in messages {
        if let refusal = self.raft.step(message) { self.refused(message, refusal) }
      }
      self.scheduleProcessReady()
    }
  }

  public func transportPeerUnreachable(_ peer: NodeID) {
    loop.execute { self.raft.reportUnreachable(peer) }
  }

  public func transportSnapshotSent(to peer: NodeID, succeeded: Bool) {
    loop.execute {
      self.raft.reportSnapshot(to: peer, succeeded: succeeded)
      self.scheduleProcessReady()
    }
  }

  public func transportBeginReceivingSnapshot(from peer: NodeID, metadata: SnapshotMetadata) throws
    -> any SnapshotSink
  {
    let sink = try writer.withStorage { try $0.snapshots.beginWrite(metadata) }
    logger.info("receiving snapshot \(metadata.index) from the leader")
    return LockedSnapshotSink(sink: sink, metadata: metadata, writer: writer)
  }

  public func transportReceivedSnapshot(_ snapshot: ReceivedSnapshot) {
    guard let sink = snapshot.sink as? LockedSnapshotSink else { return }
    loop.execute {
      guard !self.stopped else {
        sink.abort()
        return
      }
      for (index, older) in self.stagedSnapshots where index <= sink.metadata.index {
        older.abort()
        self.stagedSnapshots[index] = nil
      }
      self.stagedSnapshots[sink.metadata.index] = sink
      if let refusal = self.raft.step(snapshot.message) { self.refused(snapshot.message, refusal) }
      self.processReady()
      // The core declined it (it already has that much of the log): throw the file away.
      if let unused = self.stagedSnapshots.removeValue(forKey: sink.metadata.index) { unused.abort() }
    }
  }
}

extension RaftDBNode {
  public func transportHasSpace(forSnapshotBytes bytes: UInt64) -> Bool {
    guard let free = freeBytes(atPath: options.dataDirectory) else { return true }
    let (needed, overflow) = bytes.addingReportingOverflow(options.snapshotDiskReserveBytes)
    return !overflow && needed <= free
  }

  public func transportRefused(_ refusal: TransportRefusal) {
    metrics.refusedPeerConnections[refusal.reason]?.increment()
    loop.execute {
      self.connectionRefusalLog.record(refusal.reason, refusal) { refusal, heldBack in
        self.logConnectionRefusal(refusal, heldBack: heldBack)
      }
      if refusal.reason == .acceptFailed { self.stepDownForResourceExhaustion(refusal.detail) }
    }
  }

  func logConnectionRefusal(_ refusal: TransportRefusal, heldBack: Int) {
    logger.warning(
      "refused a peer connection: \(refusal.detail)\(Logger.heldBackSuffix(heldBack, interval: Self.refusalLogInterval))",
      metadata: ["remote": "\(refusal.remote)", "reason": "\(refusal.reason.rawValue)"])
  }

  func logMessageRefusal(_ message: Message, _ refusal: MessageRefusal, heldBack: Int) {
    logger.warning(
      "refused a peer message: \(refusal)\(Logger.heldBackSuffix(heldBack, interval: Self.refusalLogInterval))",
      metadata: [
        "from": "\(name(of: message.from))", "message": "\(message.description.prefix(200))",
        "reason": "\(refusal.label)",
      ])
  }

  /// Summaries of refusals held back by the rate limit, once their interval is over.
  func flushRefusalLogs() {
    connectionRefusalLog.flush { refusal, heldBack in logConnectionRefusal(refusal, heldBack: heldBack) }
    messageRefusalLog.flush { event, heldBack in
      logMessageRefusal(event.message, event.refusal, heldBack: heldBack)
    }
  }

  /// A leader that cannot accept connections (out of file descriptors) hands its leadership to the
  /// most caught-up voter rather than keep the cluster waiting on it.
  func stepDownForResourceExhaustion(_ reason: String) {
    guard raft.isLeader else { return }
    let status = raft.status
    let candidate = status.followers
      .filter { status.configuration.isVoter($0.id) && $0.recentlyActive }
      .max { $0.matchIndex < $1.matchIndex }
    guard let candidate else {
      logger.error("cannot accept connections (\(reason)) and no voter to hand leadership to")
      return
    }
    logger.error(
      "cannot accept connections (\(reason)); handing leadership to \(name(of: candidate.id))"
    )
    try? raft.transferLeadership(to: candidate.id)
    processReady()
  }

  /// Counts a peer message the core refused and logs it (rate-limited: a flood costs a counter each).
  func refused(_ message: Message, _ refusal: MessageRefusal) {
    metrics.refusedPeerMessages[refusal]?.increment()
    messageRefusalLog.record(refusal, (message, refusal)) { event, heldBack in
      logMessageRefusal(event.message, event.refusal, heldBack: heldBack)
    }
  }
}

extension LockedSnapshotSink: SnapshotSink {}

/// Free bytes for unprivileged use on the file system holding `path`, or nil if unknown.
func freeBytes(atPath path: String) -> UInt64? {
  #if canImport(Glibc)
    var stats = statvfs()
    guard statvfs(path, &stats) == 0 else { return nil }
    return UInt64(stats.f_bavail) &* UInt64(stats.f_frsize)
  #else
    return nil
  #endif
}

/// Hands memory freed by compaction back to the system. Compaction frees the log entries of a whole
/// snapshot interval at once, allocated and freed on different threads (glibc keeps per-thread
/// arenas), and glibc otherwise keeps much of it mapped: with a million keys loaded, resident memory
/// stayed about 10% above what the node held. Runs off the node loop; `malloc_trim` locks each arena
/// in turn.
private func releaseFreedMemory() {
  #if canImport(Glibc)
    guard let trim = mallocTrim else { return }
    DispatchQueue.global(qos: .utility).async { _ = trim(0) }
  #endif
}

#if canImport(Glibc)
  /// glibc's `malloc_trim`, looked up at run time: Swift's Glibc module does not export malloc.h.
  private let mallocTrim: (@convention(c) (Int) -> Int32)? = dlsym(
    UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim"
  )
  .map { unsafeBitCast($0, to: (@convention(c) (Int) -> Int32).self) }
#endif
