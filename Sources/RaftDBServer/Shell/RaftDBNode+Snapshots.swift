import Foundation
import KVStore
import Logging
import NIOCore
import Raft
import RaftDBService
import RaftGroup
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
  /// Serializes a frozen copy of the state machine to a snapshot file on a background thread and
  /// compacts the stored log through it; `completion` runs on the loop.
  func saveSnapshot(
    _ frozen: KVSnapshot, at metadata: SnapshotMetadata,
    completion: NIOLoopBound<(Result<Void, GroupStorageFailure>) -> Void>
  ) {
    let writer = self.writer
    DispatchQueue.global(qos: .utility).async {
      var frozen: KVSnapshot? = frozen
      let start = ContinuousClock.now
      let outcome: Result<Void, any Error> = Result {
        let sink = try writer.snapshotStore.beginWrite(metadata)
        do {
          try frozen!.serialize(chunkBytes: 1 << 20) { chunk in try sink.write(chunk) }
          try writer.withStorage { _ in try sink.commit() }
        } catch {
          sink.abort()
          throw error
        }
        try writer.withStorage { try $0.compact(through: metadata.index) }
      }
      let elapsed = ContinuousClock.now - start
      // The copy may hold the last reference to history the store has dropped since (a compaction
      // while this ran): let it go here, so that the trim below finds it freed. A trim scheduled
      // from the loop raced with this closure's release of the copy, and lost: after a compaction
      // of a million keys, resident memory stayed at 4–6× the live data until something else trimmed.
      frozen = nil
      if case .success = outcome { releaseFreedMemory() }
      self.loop.execute {
        switch outcome {
        case .success:
          self.metrics.snapshotTakeDuration.recordNanoseconds(elapsed.nanoseconds)
          self.logger.info(
            "snapshot taken", metadata: ["index": "\(metadata.index)", "duration": "\(elapsed)"])
          completion.value(.success(()))
        case .failure(let error):
          self.logger.error("snapshot at \(metadata.index) failed: \(error); retrying in 10 seconds")
          completion.value(.failure(GroupStorageFailure("\(error)")))
        }
      }
    }
  }

  /// Streams a stored snapshot to a follower that is too far behind for the log.
  func sendSnapshot(_ message: Message, metadata: SnapshotMetadata) {
    do {
      // Without the storage lock: the writer thread holds it across fsyncs (see `snapshotStore`).
      let source = try writer.snapshotStore.open(metadata)
      logger.info("sending snapshot \(metadata.index) to \(name(of: message.to))")
      transport.sendSnapshot(message, source: source)
    } catch {
      logger.error("cannot open snapshot \(metadata.index) to send: \(error)")
      let peer = message.to
      loop.execute { self.group.reportSnapshot(to: peer, succeeded: false) }
    }
  }

  /// Builds a state machine from a stored snapshot on a background thread; `completion` runs on the
  /// loop.
  func loadSnapshot(
    _ snapshot: SnapshotMetadata,
    completion: NIOLoopBound<(Result<KVStateMachine, GroupStorageFailure>) -> Void>
  ) {
    let writer = self.writer
    let options = self.options
    DispatchQueue.global(qos: .userInitiated).async {
      let start = ContinuousClock.now
      let outcome: Result<MachineBox, any Error> = Result {
        let source = try writer.snapshotStore.open(snapshot)
        defer { source.close() }
        let machine = options.makeStateMachine()
        try machine.restore(appliedIndex: snapshot.index) { try source.read(maxBytes: 1 << 20) }
        return MachineBox(machine)
      }
      let elapsed = ContinuousClock.now - start
      self.loop.execute {
        switch outcome {
        case .success(let box):
          self.metrics.snapshotInstallDuration.recordNanoseconds(elapsed.nanoseconds)
          self.logger.info("installed snapshot from the leader", metadata: ["index": "\(snapshot.index)"])
          completion.value(.success(box.machine))
        case .failure(let error):
          completion.value(.failure(GroupStorageFailure("\(error)")))
        }
      }
    }
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
        if let refusal = self.group.step(message) { self.refused(message, refusal) }
      }
    }
  }

  public func transportPeerUnreachable(_ peer: NodeID) {
    loop.execute { self.group.reportUnreachable(peer) }
  }

  public func transportSnapshotSent(to peer: NodeID, succeeded: Bool) {
    loop.execute { self.group.reportSnapshot(to: peer, succeeded: succeeded) }
  }

  public func transportBeginReceivingSnapshot(from peer: NodeID, metadata: SnapshotMetadata) throws
    -> any SnapshotSink
  {
    // On a peer connection's loop: without the storage lock (see `StorageWriter.snapshotStore`).
    let sink = try writer.snapshotStore.beginWrite(metadata)
    logger.info("receiving snapshot \(metadata.index) from the leader")
    return LockedSnapshotSink(sink: sink, metadata: metadata, writer: writer)
  }

  public func transportReceivedSnapshot(_ snapshot: ReceivedSnapshot) {
    guard let sink = snapshot.sink as? LockedSnapshotSink else { return }
    loop.execute {
      if let refusal = self.group.receiveSnapshot(snapshot.message, staged: sink) {
        self.refused(snapshot.message, refusal)
      }
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
    guard let candidate = mostCaughtUpVoter() else {
      logger.error("cannot accept connections (\(reason)) and no voter to hand leadership to")
      return
    }
    logger.error(
      "cannot accept connections (\(reason)); handing leadership to \(name(of: candidate))"
    )
    try? group.transferLeadership(to: candidate)
  }

  /// The voter other than this leader with the longest matching log among those recently heard
  /// from: the one to hand leadership to.
  func mostCaughtUpVoter() -> NodeID? {
    let status = raft.status
    return status.followers
      .filter { status.configuration.isVoter($0.id) && $0.recentlyActive }
      .max { $0.matchIndex < $1.matchIndex }?.id
  }

  /// Counts a peer message the core refused and logs it (rate-limited: a flood costs a counter each).
  func refused(_ message: Message, _ refusal: MessageRefusal) {
    metrics.refusedPeerMessages[refusal]?.increment()
    messageRefusalLog.record(refusal, (message, refusal)) { event, heldBack in
      logMessageRefusal(event.message, event.refusal, heldBack: heldBack)
    }
  }
}

extension LockedSnapshotSink: SnapshotSink, StagedSnapshot {}

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
