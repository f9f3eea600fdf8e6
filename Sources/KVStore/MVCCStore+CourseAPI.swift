/// The course's API (string keys and values, `KVRecord`) on top of the multi-version store, and the
/// limits every replica applies to the multi-version commands.
extension MVCCStore {
  /// The current record of `key`.
  public func record(of key: String) -> KVRecord? {
    get(Array(key.utf8)).map(KVRecord.init)
  }

  /// Keys with this prefix in ascending byte order, at most `limit` of them: O(log n + limit).
  public func list(prefix: String, limit: Int) -> [(key: String, record: KVRecord)] {
    guard limit > 0 else { return [] }
    var matches: [(key: String, record: KVRecord)] = []
    matches.reserveCapacity(Swift.min(limit, 1024))
    forEachLive(from: Array(prefix.utf8)) { key, kv in
      guard key.starts(with: prefix.utf8) else { return false }
      matches.append((String(decoding: key, as: UTF8.self), KVRecord(kv)))
      return matches.count < limit
    }
    return matches
  }
}

extension KVRecord {
  /// A multi-version key-value as the course's API shows it (its value as UTF-8 text).
  public init(_ kv: MVCCKeyValue) {
    self.init(
      value: String(decoding: kv.value, as: UTF8.self), createRevision: UInt64(kv.createRevision),
      modRevision: UInt64(kv.modRevision), version: UInt64(kv.version))
  }
}

extension KVLimits {
  /// Why a transaction, compaction or lease command breaks a limit every replica applies, or nil:
  /// what a service checks before proposing one.
  public func violation(ofMultiVersion command: KVCommand) -> String? {
    multiVersionViolation(of: command, limits: self)
  }
}

/// Why a multi-version command breaks a limit, or nil. Every replica applies these, so the service
/// checks the same before proposing; what the store itself refuses (an empty key, a missing lease)
/// is an etcd error in the result instead.
func multiVersionViolation(of command: KVCommand, limits: KVLimits) -> String? {
  switch command {
  case .txn(let txn):
    return multiVersionViolation(of: txn, limits: limits)
  case .grantLease(_, let ttl):
    guard ttl >= 1 else { return "lease TTL must be at least 1 second" }
    return ttl > limits.maxLeaseTTL ? "etcdserver: too large lease TTL" : nil
  case .checkpointLeases(let checkpoints):
    if checkpoints.count > limits.maxLeaseCheckpoints {
      return "\(checkpoints.count) lease checkpoints exceed the limit of \(limits.maxLeaseCheckpoints)"
    }
    return checkpoints.contains { $0.remainingTTL < 0 } ? "negative remaining TTL" : nil
  case .compact, .revokeLease:
    return nil
  case .put, .delete, .compareAndSet, .compareAndDelete, .setClusterVersion:
    return nil
  }
}

/// etcd's limits on a transaction (`--max-txn-ops` per list, at every level), and this store's on
/// the size of each key and value.
func multiVersionViolation(of txn: TxnRequest, limits: KVLimits) -> String? {
  if txn.compare.count > limits.maxTxnOps || txn.success.count > limits.maxTxnOps
    || txn.failure.count > limits.maxTxnOps
  {
    return "etcdserver: too many operations in txn request"
  }
  func key(_ bytes: [UInt8]) -> String? {
    bytes.count > limits.maxKeyBytes ? "key of \(bytes.count) bytes exceeds \(limits.maxKeyBytes)" : nil
  }
  func range(_ range: KeyRange) -> String? { key(range.key) ?? key(range.rangeEnd) }
  for compare in txn.compare {
    if let reason = range(compare.range) { return reason }
  }
  for operation in txn.success + txn.failure {
    let reason: String?
    switch operation {
    case .range(let request): reason = range(request.range)
    case .deleteRange(let request): reason = range(request.range)
    case .put(let request):
      reason =
        key(request.key)
        ?? (request.value.count > limits.maxValueBytes
          ? "value of \(request.value.count) bytes exceeds \(limits.maxValueBytes)" : nil)
    case .txn(let nested): reason = multiVersionViolation(of: nested, limits: limits)
    }
    if let reason { return reason }
  }
  return nil
}
