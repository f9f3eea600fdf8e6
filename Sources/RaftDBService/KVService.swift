import Foundation
import KVStore
import NIOCore
import Raft
import RaftDBAPI

/// raftdb's operations, with no protocol in them: key-value commands, reads at each level,
/// membership, status and leadership transfer. The service validates every request against the
/// limits the replicas apply and answers in typed results and `ServiceError`s; a protocol adapter
/// (the HTTP API, later gRPC) only decodes requests, calls it and encodes what it says.
///
/// Every future completes on the `eventLoop` the caller passes, the one that owns its connection.
/// Validation failures come back as failed futures too, so that an adapter has one error path.
public struct KVService: Sendable {
  public let limits: KVLimits
  /// The most bytes of keys and values one answer may carry (a range, a transaction's gets): beyond
  /// it the request fails with `tooLarge` and the client pages with `limit`, so that one unlimited
  /// range over a large store cannot make a member build a response of unbounded size.
  public let maxResponseBytes: Int
  let backend: any ServiceBackend
  let validation: RequestValidation

  public init(backend: any ServiceBackend, limits: KVLimits, maxResponseBytes: Int = 64 << 20) {
    self.backend = backend
    self.limits = limits
    self.maxResponseBytes = maxResponseBytes
    validation = RequestValidation(limits: limits)
  }

  // MARK: Writes

  /// Writes every pair in one revision, atomically.
  public func put(_ pairs: [KeyValue], idempotencyKey: String?, on eventLoop: any EventLoop)
    -> EventLoopFuture<PutResult>
  {
    write(.put(pairs), idempotencyKey: idempotencyKey, on: eventLoop) { result, replayed in
      guard case .put(let revision) = result else { return nil }
      return PutResult(revision: revision, replayed: replayed)
    }
  }

  public func delete(_ key: String, idempotencyKey: String?, on eventLoop: any EventLoop)
    -> EventLoopFuture<DeleteResult>
  {
    write(.delete(key: key), idempotencyKey: idempotencyKey, on: eventLoop) { result, replayed in
      guard case .delete(let existed, let revision) = result else { return nil }
      return DeleteResult(existed: existed, revision: revision, replayed: replayed)
    }
  }

  /// Writes `value` only if the key holds `expected` (nil: only if it is absent).
  public func compareAndSet(
    _ key: String, expected: String?, value: String, idempotencyKey: String?, on eventLoop: any EventLoop
  ) -> EventLoopFuture<CompareAndSetResult> {
    write(
      .compareAndSet(key: key, expected: expected, value: value), idempotencyKey: idempotencyKey,
      on: eventLoop
    ) { result, replayed in
      guard case .compareAndSet(let succeeded, let current, let revision) = result else { return nil }
      return CompareAndSetResult(
        succeeded: succeeded, current: current, revision: revision, replayed: replayed)
    }
  }

  /// Deletes the key only if it holds `expected` (a lock released only by its holder). Needs
  /// cluster version 2.
  public func compareAndDelete(
    _ key: String, expected: String, idempotencyKey: String?, on eventLoop: any EventLoop
  ) -> EventLoopFuture<CompareAndSetResult> {
    write(.compareAndDelete(key: key, expected: expected), idempotencyKey: idempotencyKey, on: eventLoop) {
      result, replayed in
      guard case .compareAndSet(let succeeded, let current, let revision) = result else { return nil }
      return CompareAndSetResult(
        succeeded: succeeded, current: current, revision: revision, replayed: replayed)
    }
  }

  /// Validates and proposes `command`, then turns the state machine's result into `T` with
  /// `extract`, which returns nil for a result of the wrong kind (a rejection, or a bug).
  func write<T: Sendable>(
    _ command: KVCommand, idempotencyKey: String?, on eventLoop: any EventLoop,
    _ extract: @escaping @Sendable (KVResult, _ replayed: Bool) -> T?
  ) -> EventLoopFuture<T> {
    do {
      try validation.validate(idempotencyKey: idempotencyKey)
      try validation.validate(command)
    } catch {
      return eventLoop.makeFailedFuture(error)
    }
    let request = KVRequest(
      command: command, idempotencyKey: idempotencyKey,
      proposedAtMillis: UInt64(max(0, Date().timeIntervalSince1970 * 1000)))
    return backend.submitWrite(request).hop(to: eventLoop).flatMapThrowing { outcome in
      if let value = extract(outcome.result, outcome.replayed) { return value }
      if case .rejected(let reason) = outcome.result { throw ServiceError.invalidArgument(reason) }
      if case .failed(let error, _) = outcome.result { throw ServiceError.store(error) }
      if outcome.replayed {
        throw ServiceError.invalidArgument(
          "this idempotency key was already used for a different request (\(outcome.result)); use a new key for each request"
        )
      }
      throw ServiceError.internalError("unexpected result \(outcome.result)")
    }
  }

  // MARK: Reads

  /// Reads `key` at `level`: `stale` on this member at once; `default` and `consistent` on the
  /// leader only (anywhere else the future fails with `notLeader`).
  public func get(_ key: String, level: ReadLevel, on eventLoop: any EventLoop) -> EventLoopFuture<KVRecord?>
  {
    do {
      try validation.validate(key: key)
    } catch {
      return eventLoop.makeFailedFuture(error)
    }
    if level == .stale { return eventLoop.makeSucceededFuture(backend.staleRead(key)) }
    return backend.submitRead(key, level: level).hop(to: eventLoop)
  }

  // MARK: Membership, status and leadership

  /// Adds a member as a learner and, unless `asVoter` is false, promotes it once it has caught up.
  /// Repeating a join resumes it. `memberID` is the id the joining node chose (nil: the legacy id of
  /// its name, which builds before member ids use).
  public func join(
    name: String, raftAddress: String, httpAddress: String, memberID: NodeID?, asVoter: Bool
  ) async throws(ServiceError) -> JoinResult {
    guard !name.isEmpty else { throw .invalidArgument("a member needs a name") }
    for field in [name, raftAddress, httpAddress] where field.utf8.count > MemberInfo.maxFieldBytes {
      throw .invalidArgument("member names and addresses are at most \(MemberInfo.maxFieldBytes) bytes")
    }
    guard splitHostPort(raftAddress) != nil else {
      throw .invalidArgument("malformed raft address \"\(raftAddress)\" (host:port)")
    }
    guard httpAddress.isEmpty || splitHostPort(httpAddress) != nil else {
      throw .invalidArgument("malformed HTTP address \"\(httpAddress)\" (host:port)")
    }
    let info = MemberInfo(name: name, raftAddress: raftAddress, httpAddress: httpAddress)
    let outcome = try await backend.addMember(info, memberID: memberID, asVoter: asVoter)
    return JoinResult(outcome: outcome, memberID: memberID ?? MemberInfo.legacyNodeID(forName: name))
  }

  /// Removes the member named `name` (or with that member id, in hex).
  public func remove(name: String) async throws(ServiceError) {
    guard !name.isEmpty else { throw .invalidArgument("name the member to remove") }
    try await backend.removeMember(named: name)
  }

  /// Hands leadership to the member named `name` (nil: the most caught-up voter) and returns the
  /// new leader once it has taken over.
  public func transferLeadership(to name: String?) async throws(ServiceError) -> MemberInfo {
    if let name, name.isEmpty { throw .invalidArgument("name the member to hand leadership to") }
    return try await backend.transferLeadership(to: name)
  }

  public func status(on eventLoop: any EventLoop) -> EventLoopFuture<MemberStatus> {
    backend.submitStatus().hop(to: eventLoop)
  }

  /// Whether this member can serve linearizable requests now (`Readiness` has the rule).
  public func readiness(on eventLoop: any EventLoop) -> EventLoopFuture<Readiness> {
    status(on: eventLoop).map(Readiness.init(of:))
  }

  /// This member's build version and the cluster version.
  public func versions() -> VersionInfo { backend.versions() }

  /// Cluster id, member id and term for a response header, on the caller's thread.
  public func memberHeader() -> MemberHeader { backend.memberHeader() }
}

public struct PutResult: Sendable {
  public var revision: UInt64
  /// True when an earlier request with the same idempotency key applied it; this is its result.
  public var replayed: Bool
}

public struct DeleteResult: Sendable {
  public var existed: Bool
  /// The store's revision after the delete (unchanged if the key was absent).
  public var revision: UInt64
  public var replayed: Bool
}

public struct CompareAndSetResult: Sendable {
  public var succeeded: Bool
  /// The key's value after the operation, so that a loser learns what it lost to.
  public var current: String?
  public var revision: UInt64
  public var replayed: Bool
}

public struct JoinResult: Sendable {
  /// What the join did: "added as voter", "added as learner", "already a voter", ...
  public var outcome: String
  public var memberID: NodeID
}

extension KVCommand {
  /// How errors name the command.
  public var operationName: String {
    switch self {
    case .put: "put"
    case .delete: "delete"
    case .compareAndSet: "compare-and-set"
    case .compareAndDelete: "compare-and-delete"
    case .setClusterVersion: "set cluster version"
    case .txn: "txn"
    case .compact: "compact"
    case .grantLease: "lease grant"
    case .revokeLease: "lease revoke"
    case .checkpointLeases: "lease checkpoint"
    }
  }
}
