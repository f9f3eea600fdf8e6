import KVStore
import NIOCore
import RaftDBAPI

/// The multi-version store's operations, etcd v3's: ranges at any level and revision,
/// transactions, compaction and leases. They need cluster version 3 (the leader refuses them with
/// `failedPrecondition` until every member supports it).
extension KVService {
  /// A range read. `stale` reads this member's last published store; `default` and `consistent`
  /// read the leader's once it may be read at that level (anywhere else: `notLeader`).
  public func range(_ request: RangeRequest, level: ReadLevel, on eventLoop: any EventLoop)
    -> EventLoopFuture<RangeResult>
  {
    if let reason = limits.violation(ofMultiVersion: .txn(TxnRequest(success: [.range(request)]))) {
      return eventLoop.makeFailedFuture(ServiceError.invalidArgument(reason))
    }
    let maxResponseBytes = maxResponseBytes
    let read: @Sendable (MVCCStore) throws(ServiceError) -> RangeResult = { store throws(ServiceError) in
      let response: RangeResponse
      do throws(MVCCError) {
        response = try store.range(request)
      } catch {
        throw .store(error)
      }
      try Self.requireWithin(maxResponseBytes, response.kvs)
      return RangeResult(response: response, revision: store.revision)
    }
    if level == .stale {
      return eventLoop.makeCompletedFuture { () throws(ServiceError) in try read(backend.staleStore()) }
    }
    return backend.submitStoreRead(level: level, read).hop(to: eventLoop)
  }

  /// A transaction, applied at one revision by every replica. Its gets count against
  /// `maxResponseBytes` together: over it, the transaction has applied but its answer is refused
  /// (`tooLarge`, saying so), as etcd's answer would exceed the client's receive limit.
  public func txn(_ request: TxnRequest, on eventLoop: any EventLoop) -> EventLoopFuture<TxnResult> {
    let maxResponseBytes = maxResponseBytes
    return multiVersionWrite(.txn(request), on: eventLoop) { result in
      guard case .txn(let response, let revision) = result else { return nil }
      return TxnResult(response: response, revision: revision)
    }.flatMapThrowing { (result: TxnResult) throws -> TxnResult in
      var kvs: [MVCCKeyValue] = []
      Self.collectKeyValues(result.response, into: &kvs)
      try Self.requireWithin(maxResponseBytes, kvs, applied: true)
      return result
    }
  }

  /// Refuses an answer whose keys and values exceed `limit` bytes.
  static func requireWithin(_ limit: Int, _ kvs: [MVCCKeyValue], applied: Bool = false) throws(ServiceError) {
    var bytes = 0
    for kv in kvs { bytes += kv.key.count + kv.value.count }
    guard bytes > limit else { return }
    throw .tooLarge(
      "the answer holds \(bytes) bytes of keys and values, over the \(limit)-byte limit (-max-response-bytes)"
        + (applied ? "; the transaction was applied" : "; ask for fewer keys with limit (or keys_only)"))
  }

  static func collectKeyValues(_ response: TxnResponse, into kvs: inout [MVCCKeyValue]) {
    for operation in response.responses {
      switch operation {
      case .range(let range): kvs += range.kvs
      case .put(let put): if let previous = put.prevKV { kvs.append(previous) }
      case .deleteRange(let delete): kvs += delete.prevKVs
      case .txn(let nested): collectKeyValues(nested, into: &kvs)
      }
    }
  }

  /// Drops the history below `revision`; returns the store's revision.
  public func compact(revision: Int64, on eventLoop: any EventLoop) -> EventLoopFuture<UInt64> {
    multiVersionWrite(.compact(revision: revision), on: eventLoop) { result in
      guard case .compact(let revision) = result else { return nil }
      return revision
    }
  }

  /// Grants a lease of `ttl` seconds, raised to `backend.minimumLeaseTTL`. `id` 0 lets the service
  /// choose one; a chosen id that is taken fails with `leaseExists`.
  public func grantLease(ttl: Int64, id: Int64, on eventLoop: any EventLoop) -> EventLoopFuture<LeaseGrant> {
    guard id >= 0 else { return eventLoop.makeFailedFuture(ServiceError.store(.invalidLeaseID)) }
    // Chosen ids stay below 2^53, so that a JSON number carries them exactly.
    let chosen = id != 0 ? id : Int64.random(in: 1...((1 << 53) - 1))
    let granted = max(ttl, backend.minimumLeaseTTL)
    return multiVersionWrite(.grantLease(id: chosen, ttl: granted), on: eventLoop) { result in
      guard case .leaseGranted(let id, let ttl, let revision) = result else { return nil }
      return LeaseGrant(id: id, ttl: ttl, revision: revision)
    }
  }

  /// Revokes a lease: its keys are deleted at one revision. Returns how many, and the revision.
  public func revokeLease(id: Int64, on eventLoop: any EventLoop) -> EventLoopFuture<
    (deleted: Int64, revision: UInt64)
  > {
    multiVersionWrite(.revokeLease(id: id), on: eventLoop) { result in
      guard case .leaseRevoked(let deleted, let revision) = result else { return nil }
      return (deleted, revision)
    }
  }

  /// Renews a lease for its whole TTL, on the leader; returns the TTL.
  public func keepAlive(lease id: Int64, on eventLoop: any EventLoop) -> EventLoopFuture<Int64> {
    backend.leaseKeepAlive(id).hop(to: eventLoop)
  }

  /// A lease's TTLs and keys, on the leader.
  public func timeToLive(lease id: Int64, on eventLoop: any EventLoop) -> EventLoopFuture<LeaseStatus> {
    backend.leaseTimeToLive(id).hop(to: eventLoop)
  }

  /// Every lease id, from this member's last published store.
  public func leases() -> [Int64] { backend.staleStore().leaseIDs }

  /// Proposes a multi-version command: a store error in the result fails the future with it.
  private func multiVersionWrite<T: Sendable>(
    _ command: KVCommand, on eventLoop: any EventLoop, _ extract: @escaping @Sendable (KVResult) -> T?
  ) -> EventLoopFuture<T> {
    write(command, idempotencyKey: nil, on: eventLoop) { result, _ in extract(result) }
  }
}

public struct RangeResult: Sendable {
  public var response: RangeResponse
  /// The store's revision when it was read (etcd's header revision).
  public var revision: Int64
}

public struct TxnResult: Sendable {
  public var response: TxnResponse
  public var revision: UInt64
}

public struct LeaseGrant: Sendable {
  public var id: Int64
  public var ttl: Int64
  public var revision: UInt64
}

extension KVService {
  /// The revision of this member's last published store (etcd's header revision for answers that
  /// read no keys).
  public func currentRevision() -> Int64 { backend.staleStore().revision }
}

extension KVService {
  /// The revision below which this member's history is compacted.
  public func compactedRevision() -> Int64 { backend.staleStore().compactRevision }
}
