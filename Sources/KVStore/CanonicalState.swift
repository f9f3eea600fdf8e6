/// The state in a form that does not depend on hash order or on how it was reached (applied, or
/// restored from a snapshot): equal states give equal values. Replicas can compare these (or a hash
/// of them) to check that they have not diverged; tests compare them directly.
struct KVCanonicalState: Hashable, Sendable {
  struct Key: Hashable, Sendable {
    var key: [UInt8]
    var record: KVRecord
  }

  struct Remembered: Hashable, Sendable {
    var key: String
    var result: KVResult
    var proposedAtMillis: UInt64
    var recordedAtMillis: UInt64
  }

  var appliedIndex: UInt64
  var revision: UInt64
  var dataBytes: Int
  var clockMillis: UInt64
  var clusterVersion: UInt32
  /// In ascending key byte order.
  var keys: [Key]
  /// Oldest first.
  var remembered: [Remembered]
}

extension KVSnapshot {
  func canonicalState() -> KVCanonicalState {
    let sorted = smallestKeys(in: entries, limit: Swift.max(entries.count, 1)) { _ in true }
    var remembered: [KVCanonicalState.Remembered] = []
    idempotency.forEachInOrder { key, record in
      remembered.append(
        .init(
          key: key, result: record.result, proposedAtMillis: record.proposedAtMillis,
          recordedAtMillis: record.recordedAtMillis))
    }
    return KVCanonicalState(
      appliedIndex: appliedIndex, revision: revision, dataBytes: dataBytes,
      clockMillis: idempotency.clockMillis, clusterVersion: clusterVersion,
      keys: sorted.map { entry in .init(key: entry.withKey { Array($0) }, record: entry.record) },
      remembered: remembered)
  }
}

extension KVStateMachine {
  func canonicalState() -> KVCanonicalState { snapshot().canonicalState() }
}
