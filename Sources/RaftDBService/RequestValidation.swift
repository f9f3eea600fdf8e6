import KVStore

/// The limits every replica applies (`KVLimits`), checked before a request is proposed, so that a
/// request a replica would reject is refused at once instead of replicated first. The state machine
/// checks again when it applies: it must reach its verdict from the log alone, whoever proposed.
/// `ServiceValidationTests` checks that both verdicts agree.
struct RequestValidation: Sendable {
  let limits: KVLimits

  func validate(key: String) throws(ServiceError) {
    guard !key.isEmpty else { throw .invalidArgument("key must not be empty") }
    let bytes = key.utf8.count
    guard bytes <= limits.maxKeyBytes else {
      throw .invalidArgument("key of \(bytes) bytes exceeds the \(limits.maxKeyBytes)-byte limit")
    }
  }

  func validate(value: String, of key: String) throws(ServiceError) {
    let bytes = value.utf8.count
    guard bytes <= limits.maxValueBytes else {
      throw .tooLarge(
        "value of \"\(key)\" has \(bytes) bytes, over the \(limits.maxValueBytes)-byte limit")
    }
  }

  /// 1 to `maxIdempotencyKeyBytes` bytes of printable ASCII, so that replicas compare keys as plain
  /// bytes.
  func validate(idempotencyKey: String?) throws(ServiceError) {
    guard let idempotencyKey else { return }
    guard isValidIdempotencyKey(idempotencyKey, maxBytes: limits.maxIdempotencyKeyBytes) else {
      throw .invalidArgument(
        "idempotency key must be 1 to \(limits.maxIdempotencyKeyBytes) bytes of printable ASCII")
    }
  }

  func validate(_ command: KVCommand) throws(ServiceError) {
    switch command {
    case .put(let pairs):
      guard !pairs.isEmpty else { throw .invalidArgument("a put needs at least one key") }
      guard pairs.count <= limits.maxPairsPerPut else {
        throw .invalidArgument(
          "a put of \(pairs.count) keys exceeds the limit of \(limits.maxPairsPerPut) keys per put")
      }
      for pair in pairs {
        try validate(key: pair.key)
        try validate(value: pair.value, of: pair.key)
      }
      if pairs.count > 1 {
        // Byte equality, as the replicas compare keys (not `String ==`, which is Unicode-aware).
        var seen = Set<[UInt8]>(minimumCapacity: pairs.count)
        for pair in pairs where !seen.insert(Array(pair.key.utf8)).inserted {
          throw .invalidArgument("key \"\(pair.key)\" appears twice in one put")
        }
      }
    case .delete(let key):
      try validate(key: key)
    case .compareAndSet(let key, let expected, let value):
      try validate(key: key)
      try validate(value: value, of: key)
      // Stricter than a replica, which lets such a comparison fail: an expected value longer than
      // any storable one can never match, so it is refused before it takes a log entry.
      if let expected { try validate(value: expected, of: key) }
    case .compareAndDelete(let key, let expected):
      try validate(key: key)
      try validate(value: expected, of: key)
    case .setClusterVersion:
      throw .invalidArgument("the cluster version is raised by the leader, not by clients")
    case .checkpointLeases:
      throw .invalidArgument("lease checkpoints are proposed by the leader, not by clients")
    case .txn, .compact, .grantLease, .revokeLease:
      if let reason = limits.violation(ofMultiVersion: command) { throw .invalidArgument(reason) }
    }
  }
}
