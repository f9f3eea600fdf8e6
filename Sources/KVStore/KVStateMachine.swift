/// The replicated key-value state: what every replica computes from the committed log.
///
/// Owned by one thread (its Raft group's), so it is a class without locks and not `Sendable`; what
/// crosses threads is the immutable `KVSnapshot`.
public final class KVStateMachine {
  public let limits: KVLimits
  public private(set) var appliedIndex: UInt64 = 0
  /// etcd-style global revision: +1 per applied command that changes data.
  public var revision: UInt64 { UInt64(store.revision) }
  /// Bytes of the keys and values that exist now (UTF-8 bytes, without per-key overhead).
  public var dataBytes: Int { store.liveBytes }
  /// Bytes of keys and values held, history since the last compaction included: what a snapshot
  /// carries, and what compaction frees.
  public var heldBytes: Int { store.heldBytes }
  /// The cluster version the log has agreed (`setClusterVersion`); commands that need a newer one
  /// are not proposed.
  public private(set) var clusterVersion = ClusterVersion.initial
  /// The newest cluster version this replica can apply: `ClusterVersion.latest`, or lower for a
  /// replica that stands in for an older build in tests. Commands it does not know it rejects as
  /// an older build would.
  public let supportedClusterVersion: UInt32
  /// Set once the log raised the cluster version above `supportedClusterVersion`: this replica can
  /// no longer apply the cluster's commands as the others do and must stop (its node exits and asks
  /// for an upgrade, as etcd refuses to run below its cluster's version).
  public private(set) var unsupportedClusterVersion: UInt32?

  /// The multi-version store: every key's history since the last compaction, and the leases.
  public private(set) var store = MVCCStore()
  private var idempotency = IdempotencyTable()
  /// Bytes of held state the last applied command dropped (a compaction's; 0 for anything else).
  public private(set) var bytesDroppedByLastApply = 0

  public init(limits: KVLimits = KVLimits(), supportedClusterVersion: UInt32 = ClusterVersion.latest) {
    // Entries record lengths in 32 bits.
    precondition(
      limits.maxKeyBytes <= Int(UInt32.max) && limits.maxValueBytes <= Int(UInt32.max),
      "keys and values are limited to 4 GiB")
    self.limits = limits
    self.supportedClusterVersion = supportedClusterVersion
  }

  /// Keys that exist now.
  public var count: Int { store.liveKeyCount }

  /// Idempotency records currently remembered (for metrics).
  public var idempotencyRecordCount: Int { idempotency.count }

  // MARK: - Applying the log

  /// Applies the command in a committed log entry. Deterministic and total: the same bytes give the
  /// same state and result on every replica, and any bytes give a result (`rejected` for garbage).
  ///
  /// Applying an index twice would apply a command twice, so `index` must be above `appliedIndex`;
  /// gaps are allowed because entries without commands may be skipped or passed to `advance(to:)`.
  public func apply(index: UInt64, data: [UInt8]) -> KVApplyOutcome {
    precondition(index > appliedIndex, "entry \(index) applied after \(appliedIndex)")
    appliedIndex = index
    let heldBefore = store.heldBytes
    defer { bytesDroppedByLastApply = max(0, heldBefore - store.heldBytes) }
    return data.withUnsafeBytes { apply($0) }
  }

  /// Advances appliedIndex past a log entry that carries no command (no-op, configuration).
  public func advance(to index: UInt64) {
    precondition(index >= appliedIndex, "cannot move applied index back from \(appliedIndex) to \(index)")
    appliedIndex = index
  }

  private func apply(_ bytes: UnsafeRawBufferPointer) -> KVApplyOutcome {
    let request: ParsedRequest
    do {
      request = try ParsedRequest(parsing: bytes)
    } catch {
      return KVApplyOutcome(result: .rejected(reason: "undecodable command: \(error)"), isDuplicate: false)
    }
    let required = RequestFormat.requiredClusterVersion(ofTag: request.tag)
    if case .setClusterVersion(let version) = request.command, version > supportedClusterVersion,
      supportedClusterVersion > ClusterVersion.initial
    {
      // A build that knows cluster versions cannot follow this one: its node stops.
      unsupportedClusterVersion = max(unsupportedClusterVersion ?? 0, version)
      return KVApplyOutcome(
        result: .rejected(reason: "cluster version \(version) is newer than this build supports"),
        isDuplicate: false)
    }
    guard required <= supportedClusterVersion else {
      // What a build from before the command answers (a version 1 stand-in: also to a
      // `setClusterVersion`, as a build from before cluster versions does).
      return KVApplyOutcome(
        result: .rejected(reason: "undecodable command: \(KVDecodingError.unknownTag(request.tag))"),
        isDuplicate: false)
    }
    if required > clusterVersion, request.tag != RequestFormat.tagSetClusterVersion {
      // The replicated gate: every replica rejects a command the log has not agreed yet, as the
      // older builds among them do, whoever proposed it.
      return KVApplyOutcome(
        result: .rejected(
          reason:
            "this command needs cluster version \(required), and the cluster runs version \(clusterVersion)"),
        isDuplicate: false)
    }
    // Validation comes first so that a rejected command changes nothing at all, not even the clock.
    if let reason = violation(of: request, in: bytes) {
      return KVApplyOutcome(result: .rejected(reason: reason), isDuplicate: false)
    }
    idempotency.advanceClock(to: request.proposedAtMillis, ttlMillis: limits.idempotencyTTLMillis)
    var idempotencyKey: String?
    if let range = request.idempotencyKey {
      let key = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
      if let record = idempotency.lookup(key) {
        return KVApplyOutcome(result: record.result, isDuplicate: true)
      }
      idempotencyKey = key
    }
    let result: KVResult
    switch request.command {
    case .put(let count, let firstPair):
      result = put(request, count: count, firstPair: firstPair, in: bytes)
    case .delete(let key):
      result = delete(Array(bytes[key]))
    case .compareAndSet(let key, let expected, let value):
      result = compareAndSet(
        key: UnsafeRawBufferPointer(rebasing: bytes[key]),
        expected: expected.map { UnsafeRawBufferPointer(rebasing: bytes[$0]) },
        value: UnsafeRawBufferPointer(rebasing: bytes[value]))
    case .compareAndDelete(let key, let expected):
      result = compareAndDelete(
        key: UnsafeRawBufferPointer(rebasing: bytes[key]),
        expected: UnsafeRawBufferPointer(rebasing: bytes[expected]))
    case .setClusterVersion(let version):
      if clusterVersion < ClusterVersion.multiVersion && version >= ClusterVersion.multiVersion
        && store.revision > store.compactRevision
      {
        // Until now a replica restored from an older snapshot format kept no history while the
        // others kept all of it. From here on history is replicated state (transactions read past
        // revisions), so every replica drops what it held below this revision, and they agree.
        try? store.compact(store.revision)
      }
      clusterVersion = max(clusterVersion, version)
      result = .clusterVersion(clusterVersion)
    case .multiVersion(let command):
      result = applyMultiVersion(command)
    }
    if let idempotencyKey {
      idempotency.record(
        key: idempotencyKey, result: result, proposedAtMillis: request.proposedAtMillis,
        maxRecords: limits.idempotencyRecordsMax)
    }
    return KVApplyOutcome(result: result, isDuplicate: false)
  }

  /// Why the request breaks a limit, or nil. Reasons are built only on this cold path.
  private func violation(of request: ParsedRequest, in bytes: UnsafeRawBufferPointer) -> String? {
    if let range = request.idempotencyKey,
      !isValidIdempotencyKey(
        UnsafeRawBufferPointer(rebasing: bytes[range]), maxBytes: limits.maxIdempotencyKeyBytes)
    {
      return "idempotency key must be 1-\(limits.maxIdempotencyKeyBytes) bytes of printable ASCII"
    }
    switch request.command {
    case .put(let count, let firstPair):
      if count == 0 { return "put without pairs" }
      if count > limits.maxPairsPerPut {
        return "put of \(count) pairs exceeds the limit of \(limits.maxPairsPerPut)"
      }
      var reason: String?
      request.forEachPair(in: bytes, count: count, from: firstPair) { key, value in
        if reason == nil { reason = violation(keyBytes: key.count, valueBytes: value.count) }
      }
      if reason == nil && count > 1
        && hasDuplicateKeys(request, count: count, firstPair: firstPair, in: bytes)
      {
        reason = "duplicate key in put"
      }
      return reason
    case .delete(let key):
      return violation(keyBytes: key.count, valueBytes: 0)
    case .compareAndSet(let key, _, let value):
      // The expected value is not limited: one longer than any storable value simply never matches.
      return violation(keyBytes: key.count, valueBytes: value.count)
    case .compareAndDelete(let key, _):
      return violation(keyBytes: key.count, valueBytes: 0)
    case .setClusterVersion:
      // Its result is never remembered, so that a snapshot's records stay those of client writes.
      return request.idempotencyKey == nil ? nil : "set cluster version takes no idempotency key"
    case .multiVersion(let command):
      // Their results can be large (a transaction's ranges) and etcd has no such records either.
      if request.idempotencyKey != nil { return "multi-version commands take no idempotency key" }
      return multiVersionViolation(of: command, limits: limits)
    }
  }

  private func violation(keyBytes: Int, valueBytes: Int) -> String? {
    if keyBytes == 0 { return "empty key" }
    if keyBytes > limits.maxKeyBytes { return "key of \(keyBytes) bytes exceeds \(limits.maxKeyBytes)" }
    if valueBytes > limits.maxValueBytes {
      return "value of \(valueBytes) bytes exceeds \(limits.maxValueBytes)"
    }
    return nil
  }

  private func hasDuplicateKeys(
    _ request: ParsedRequest, count: Int, firstPair: Int, in bytes: UnsafeRawBufferPointer
  ) -> Bool {
    var keys: [Range<Int>] = []
    keys.reserveCapacity(count)
    request.forEachPair(in: bytes, count: count, from: firstPair) { key, _ in keys.append(key) }
    func slice(_ range: Range<Int>) -> UnsafeRawBufferPointer {
      UnsafeRawBufferPointer(rebasing: bytes[range])
    }
    if count <= 16 {
      for i in 0..<count {
        for j in (i + 1)..<count where compareBytes(slice(keys[i]), slice(keys[j])) == 0 { return true }
      }
      return false
    }
    keys.sort { compareBytes(slice($0), slice($1)) < 0 }
    for i in 1..<count where compareBytes(slice(keys[i - 1]), slice(keys[i])) == 0 { return true }
    return false
  }

  private func put(
    _ request: ParsedRequest, count: Int, firstPair: Int, in bytes: UnsafeRawBufferPointer
  ) -> KVResult {
    let main = store.revision + 1
    var sub: Int64 = 0
    request.forEachPair(in: bytes, count: count, from: firstPair) { key, value in
      _ = store.write(
        PutRequest(key: Array(bytes[key]), value: Array(bytes[value])), main: main, sub: &sub)
    }
    store.finishWrite(main: main, sub: sub)
    return .put(revision: revision)
  }

  private func delete(_ key: [UInt8]) -> KVResult {
    let main = store.revision + 1
    var sub: Int64 = 0
    let deleted = store.write(DeleteRangeRequest(range: KeyRange(key: key)), main: main, sub: &sub).deleted
    store.finishWrite(main: main, sub: sub)
    return .delete(existed: deleted > 0, revision: revision)
  }

  private func compareAndSet(
    key: UnsafeRawBufferPointer, expected: UnsafeRawBufferPointer?, value: UnsafeRawBufferPointer
  ) -> KVResult {
    let key = Array(key)
    let current = store.get(key)
    let matches: Bool
    switch (current, expected) {
    case (nil, nil): matches = true
    case (let current?, let expected?):
      matches = current.value.withUnsafeBytes { compareBytes($0, expected) == 0 }
    default: matches = false
    }
    guard matches else {
      return .compareAndSet(
        succeeded: false, current: current.map { String(decoding: $0.value, as: UTF8.self) },
        revision: revision)
    }
    let main = store.revision + 1
    var sub: Int64 = 0
    _ = store.write(PutRequest(key: key, value: Array(value)), main: main, sub: &sub)
    store.finishWrite(main: main, sub: sub)
    return .compareAndSet(
      succeeded: true, current: String(decoding: value, as: UTF8.self), revision: revision)
  }

  private func compareAndDelete(key: UnsafeRawBufferPointer, expected: UnsafeRawBufferPointer) -> KVResult {
    let key = Array(key)
    let current = store.get(key)
    guard let current, current.value.withUnsafeBytes({ compareBytes($0, expected) == 0 }) else {
      return .compareAndSet(
        succeeded: false, current: current.map { String(decoding: $0.value, as: UTF8.self) },
        revision: revision)
    }
    _ = delete(key)  // Bumps the revision.
    return .compareAndSet(succeeded: true, current: nil, revision: revision)
  }

  /// A transaction, compaction or lease command. The store's errors are etcd's verdicts, reached
  /// alike by every replica: they are results, not rejections.
  private func applyMultiVersion(_ command: KVCommand) -> KVResult {
    do throws(MVCCError) {
      switch command {
      case .txn(let txn):
        let response = try store.txn(txn)
        return .txn(response, revision: revision)
      case .compact(let target):
        try store.compact(target)
        return .compact(revision: revision)
      case .grantLease(let id, let ttl):
        try store.grant(lease: id, ttl: ttl)
        return .leaseGranted(id: id, ttl: ttl, revision: revision)
      case .revokeLease(let id):
        let deleted = try store.revoke(lease: id)
        return .leaseRevoked(deleted: deleted, revision: revision)
      case .checkpointLeases(let checkpoints):
        // A lease revoked since the leader looked at it needs no checkpoint (etcd ignores it too).
        for checkpoint in checkpoints {
          try? store.checkpoint(lease: checkpoint.id, remainingTTL: checkpoint.remainingTTL)
        }
        return .leasesCheckpointed(revision: revision)
      case .put, .delete, .compareAndSet, .compareAndDelete, .setClusterVersion:
        preconditionFailure("the parser wraps only multi-version commands")
      }
    } catch {
      return .failed(error, revision: revision)
    }
  }

  // MARK: - Reading

  public func get(_ key: String) -> KVRecord? { store.record(of: key) }

  /// Keys with this prefix in ascending byte order, at most `limit` of them: O(log n + limit).
  public func list(prefix: String, limit: Int) -> [(key: String, record: KVRecord)] {
    store.list(prefix: prefix, limit: limit)
  }

  // MARK: - Snapshots

  /// A frozen point-in-time copy in O(1): the persistent tries are shared, and the next writes copy
  /// only the paths they touch.
  public func snapshot() -> KVSnapshot {
    KVSnapshot(
      appliedIndex: appliedIndex, store: store, idempotency: idempotency, clusterVersion: clusterVersion)
  }

  /// Replaces the whole state with a serialized snapshot read chunk by chunk (`next` returns nil at
  /// the end). The new state is built aside and swapped in only once the whole stream has checked
  /// out, so on any error nothing changes; the price is holding both states at once for a moment.
  public func restore(appliedIndex: UInt64, reading next: () throws -> [UInt8]?) throws {
    var decoder = KVSnapshotDecoder()
    while let chunk = try next() { try decoder.feed(chunk) }
    let state = try decoder.finish()
    let readable = SnapshotFormat.version(forClusterVersion: supportedClusterVersion)
    if decoder.formatVersion > readable {
      // What a build from before that format answers.
      throw KVDecodingError.unsupportedVersion(decoder.formatVersion)
    }
    guard state.appliedIndex == appliedIndex else {
      throw KVDecodingError.invalidSnapshot(
        "snapshot is at index \(state.appliedIndex), expected \(appliedIndex)")
    }
    install(state)
  }

  /// Replaces the state with an in-memory snapshot (e.g. one this node took earlier).
  public func restore(_ snapshot: KVSnapshot) {
    install(snapshot)
  }

  private func install(_ state: KVSnapshot) {
    appliedIndex = state.appliedIndex
    store = state.store
    idempotency = state.idempotency
    clusterVersion = state.clusterVersion
    if clusterVersion > supportedClusterVersion {
      // A snapshot from a cluster that outgrew this build: as for a `setClusterVersion` applied.
      unsupportedClusterVersion = max(unsupportedClusterVersion ?? 0, clusterVersion)
    }
  }
}
