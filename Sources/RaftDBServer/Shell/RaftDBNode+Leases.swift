import Foundation
import KVStore
import Logging
import NIOCore
import RaftDBAPI
import RaftDBService
import RaftGroup

/// The leader's lease clock: when each lease expires is the leader's business alone, decided on
/// its monotonic clock and carried out as a replicated revoke, so every replica deletes the same
/// keys at the same revision and no replica's clock ever changes the state (etcd's lessor).
///
/// How the remaining TTL survives an election: the leader checkpoints every lease's remaining TTL
/// through the log (every `leaseCheckpointMillis`), and a keep-alive of a checkpointed lease
/// clears its checkpoint through the log before it is answered (etcd's checkpoint-on-renew). A
/// new leader gives each lease its checkpointed remainder (its whole TTL if none) plus one
/// election timeout, as etcd's Promote does. So a lease never expires earlier than its holder's
/// last keep-alive allows; an election can only make it expire later, by at most the checkpoint
/// interval plus an election timeout. A deposed leader stops its clock at once, and a revoke it
/// proposed commits only if a quorum still followed it.
struct LeaseClock {
  /// Expiry of every lease by this leader's clock; empty while not leading.
  var expiries: [Int64: NIODeadline] = [:]
  /// Revokes proposed and not yet applied, with when to propose again if they got lost.
  var revoking: [Int64: NIODeadline] = [:]
  /// The term this clock was started in; nil while not leading.
  var leadingTerm: UInt64?
  var lastSweep = NIODeadline.distantPast
  var lastCheckpoint = NIODeadline.distantPast

  /// At most this many revokes per sweep (two sweeps a second: etcd's 1,000 revokes a second), so
  /// that a storm of expiries is spread out rather than flooding the log.
  static let revokesPerSweep = 500
  static let sweepInterval = TimeAmount.milliseconds(500)
  static let revokeRetry = TimeAmount.seconds(3)
}

extension RaftDBNode {
  /// etcd's minTTL: 1.5 election timeouts, rounded up to whole seconds.
  public var minimumLeaseTTL: Int64 {
    let millis = 3 * options.electionTimeoutTicks * options.heartbeatIntervalMillis / 2
    return Int64(max(1, (millis + 999) / 1000))
  }

  var electionTimeout: TimeAmount {
    .milliseconds(Int64(options.electionTimeoutTicks * options.heartbeatIntervalMillis))
  }

  /// Called every tick on the loop: starts or stops the clock with leadership, and twice a second
  /// revokes what expired and, every `leaseCheckpointMillis`, checkpoints what remains.
  func leaseClockTick() {
    let now = NIODeadline.now()
    guard startLeaseClockIfLeading(now: now) else { return }
    guard now - leaseClock.lastSweep >= LeaseClock.sweepInterval else { return }
    leaseClock.lastSweep = now
    // Leases granted or revoked since the last sweep.
    let ids = machine.store.leaseIDs
    let live = Set(ids)
    for id in ids where leaseClock.expiries[id] == nil {
      guard let lease = machine.store.lease(id) else { continue }
      leaseClock.expiries[id] = now + .seconds(lease.grantedTTL)
    }
    leaseClock.expiries = leaseClock.expiries.filter { live.contains($0.key) }
    leaseClock.revoking = leaseClock.revoking.filter { live.contains($0.key) }
    var expired: [Int64] = []
    for (id, deadline) in leaseClock.expiries where deadline <= now {
      if let retry = leaseClock.revoking[id], retry > now { continue }
      expired.append(id)
    }
    expired.sort()
    if expired.count > LeaseClock.revokesPerSweep {
      logger.warning(
        "lease revokes rate limited",
        metadata: ["expired": "\(expired.count)", "this_sweep": "\(LeaseClock.revokesPerSweep)"])
      expired.removeLast(expired.count - LeaseClock.revokesPerSweep)
    }
    for id in expired {
      leaseClock.revoking[id] = now + LeaseClock.revokeRetry
      logger.info("lease expired; revoking it", metadata: ["lease": "\(id)"])
      proposeInternally(.revokeLease(id: id))
    }
    if now - leaseClock.lastCheckpoint >= .milliseconds(Int64(options.leaseCheckpointMillis)) {
      leaseClock.lastCheckpoint = now
      checkpointLeases(now: now)
    }
  }

  /// Whether this node leads with a running clock, starting it if it just became leader. Stops it
  /// (forgets every expiry) once it is not.
  private func startLeaseClockIfLeading(now: NIODeadline) -> Bool {
    guard raft.isLeader, !stopped, machine.clusterVersion >= ClusterVersion.multiVersion else {
      if leaseClock.leadingTerm != nil { leaseClock = LeaseClock() }
      return false
    }
    guard leaseClock.leadingTerm != raft.currentTerm else { return true }
    leaseClock = LeaseClock()
    leaseClock.leadingTerm = raft.currentTerm
    leaseClock.lastCheckpoint = now
    for id in machine.store.leaseIDs {
      guard let lease = machine.store.lease(id) else { continue }
      let remaining = lease.checkpointedTTL > 0 ? lease.checkpointedTTL : lease.grantedTTL
      leaseClock.expiries[id] = now + .seconds(remaining) + electionTimeout
    }
    return true
  }

  /// Proposes every lease's remaining TTL, in commands of at most `maxLeaseCheckpoints`.
  private func checkpointLeases(now: NIODeadline) {
    var checkpoints: [LeaseCheckpoint] = []
    for (id, deadline) in leaseClock.expiries where deadline > now {
      let remaining = (deadline - now).nanoseconds
      checkpoints.append(
        LeaseCheckpoint(id: id, remainingTTL: max(1, (remaining + 999_999_999) / 1_000_000_000)))
    }
    checkpoints.sort { $0.id < $1.id }
    let batch = machine.limits.maxLeaseCheckpoints
    for start in stride(from: 0, to: checkpoints.count, by: batch) {
      proposeInternally(.checkpointLeases(Array(checkpoints[start..<min(start + batch, checkpoints.count)])))
    }
  }

  /// Proposes one of the leader's own commands; a failure is logged, and the clock tries again.
  @discardableResult
  func proposeInternally(_ command: KVCommand) -> EventLoopFuture<WriteOutcome> {
    let request = KVRequest(command: command, proposedAtMillis: wallClockMillis())
    let proposed = proposeWrite(request.encoded(), command: command)
    proposed.whenFailure { error in
      self.logger.debug("\(command.operationName) not applied", metadata: ["error": "\(error)"])
    }
    return proposed
  }

  // MARK: ServiceBackend

  public func leaseKeepAlive(_ id: Int64) -> EventLoopFuture<Int64> {
    loop.flatSubmit { () -> EventLoopFuture<Int64> in
      let now = NIODeadline.now()
      guard self.startLeaseClockIfLeading(now: now) else {
        return self.loop.makeFailedFuture(self.leaseRefusal())
      }
      guard let lease = self.machine.store.lease(id),
        self.leaseClock.expiries[id].map({ $0 > now }) ?? true
      else { return self.loop.makeFailedFuture(ServiceError.store(.leaseNotFound)) }
      self.leaseClock.expiries[id] = now + .seconds(lease.grantedTTL)
      guard lease.checkpointedTTL != 0 else { return self.loop.makeSucceededFuture(lease.grantedTTL) }
      // A checkpoint would give a new leader the remainder from before this renewal.
      return self.proposeInternally(.checkpointLeases([LeaseCheckpoint(id: id, remainingTTL: 0)]))
        .map { _ in lease.grantedTTL }
    }
  }

  public func leaseTimeToLive(_ id: Int64) -> EventLoopFuture<LeaseStatus> {
    loop.flatSubmit { () -> EventLoopFuture<LeaseStatus> in
      let now = NIODeadline.now()
      guard self.startLeaseClockIfLeading(now: now) else {
        return self.loop.makeFailedFuture(self.leaseRefusal())
      }
      guard let lease = self.machine.store.lease(id) else {
        return self.loop.makeFailedFuture(ServiceError.store(.leaseNotFound))
      }
      var remaining = lease.grantedTTL
      if let deadline = self.leaseClock.expiries[id] {
        let nanoseconds = (deadline - now).nanoseconds
        remaining = nanoseconds <= 0 ? -1 : (nanoseconds + 999_999_999) / 1_000_000_000
      }
      return self.loop.makeSucceededFuture(
        LeaseStatus(id: id, grantedTTL: lease.grantedTTL, remainingTTL: remaining, keys: lease.keys))
    }
  }

  /// Why this member cannot answer for a lease: not the leader, or not yet at cluster version 3.
  private func leaseRefusal() -> ServiceError {
    guard raft.isLeader else { return notLeaderError() }
    return .failedPrecondition(
      "leases need cluster version \(ClusterVersion.multiVersion), and the cluster runs version \(machine.clusterVersion)"
    )
  }

  // MARK: Store reads

  public func staleStore() -> MVCCStore { readView.withLockedValue { $0 }.store }

  public func submitStoreRead<T: Sendable>(
    level: ReadLevel, _ body: @escaping @Sendable (MVCCStore) throws(ServiceError) -> T
  ) -> EventLoopFuture<T> {
    precondition(level != .stale, "stale reads need no future: use staleStore")
    return loop.flatSubmit {
      let promise = self.loop.makePromise(of: T.self)
      do throws(GroupError) {
        try self.group.read(level == .consistent ? .readIndex : .lease) { result in
          switch result {
          case .success:
            promise.completeWith(Result { () throws(ServiceError) in try body(self.machine.store) })
          case .failure(let error): promise.fail(self.serviceError(error))
          }
        }
      } catch {
        promise.fail(self.serviceError(error))
      }
      return promise.futureResult
    }
  }
}

func wallClockMillis() -> UInt64 { UInt64(max(0, Date().timeIntervalSince1970 * 1000)) }
