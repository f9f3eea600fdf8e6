/// The state in a form that does not depend on how it was reached (applied, or restored from a
/// snapshot): equal states give equal values. Replicas can compare these (or a hash of them) to
/// check that they have not diverged; tests compare them directly.
///
/// Below cluster version 3 history is not replicated state: a replica restored from a format 1 or 2
/// snapshot starts compacted at its revision while the others keep everything, and no command can
/// tell. So the history, the compacted revision and the bytes it holds count from version 3 only.
struct KVCanonicalState: Hashable, Sendable {
  struct Key: Hashable, Sendable {
    var key: [UInt8]
    var record: KVRecord
    var lease: Int64
  }

  struct History: Hashable, Sendable {
    var key: [UInt8]
    var changes: [MVCCStore.ChangeRecord]
  }

  struct Remembered: Hashable, Sendable {
    var key: String
    var result: KVResult
    var proposedAtMillis: UInt64
    var recordedAtMillis: UInt64
  }

  var appliedIndex: UInt64
  var revision: UInt64
  var liveBytes: Int
  var clockMillis: UInt64
  var clusterVersion: UInt32
  /// The live keys, in ascending byte order.
  var keys: [Key]
  /// From cluster version 3: the compacted revision, the held bytes and every key's history.
  var compactRevision: Int64?
  var heldBytes: Int?
  var history: [History]?
  var leases: [Lease]
  /// Oldest first.
  var remembered: [Remembered]
}

extension KVSnapshot {
  func canonicalState() -> KVCanonicalState {
    var keys: [KVCanonicalState.Key] = []
    store.forEachLive(from: []) { key, kv in
      keys.append(.init(key: key, record: KVRecord(kv), lease: kv.lease))
      return true
    }
    var history: [KVCanonicalState.History]?
    if clusterVersion >= ClusterVersion.multiVersion {
      var all: [KVCanonicalState.History] = []
      let compacted = store.compactRevision
      store.forEachHistory(from: []) { key, changes in
        // The sub-revision of the state kept at the compacted revision is not observable, and a
        // store restored from an older format does not know it.
        let changes = changes.map { change in
          var change = change
          if change.revision.main <= compacted { change.revision.sub = 0 }
          return change
        }
        all.append(.init(key: key, changes: changes))
        return true
      }
      history = all
    }
    var remembered: [KVCanonicalState.Remembered] = []
    idempotency.forEachInOrder { key, record in
      remembered.append(
        .init(
          key: key, result: record.result, proposedAtMillis: record.proposedAtMillis,
          recordedAtMillis: record.recordedAtMillis))
    }
    let modern = history != nil
    return KVCanonicalState(
      appliedIndex: appliedIndex, revision: revision, liveBytes: store.liveBytes,
      clockMillis: idempotency.clockMillis, clusterVersion: clusterVersion, keys: keys,
      compactRevision: modern ? store.compactRevision : nil, heldBytes: modern ? store.heldBytes : nil,
      history: history, leases: store.leaseIDs.compactMap { store.lease($0) }, remembered: remembered)
  }
}

extension KVStateMachine {
  func canonicalState() -> KVCanonicalState { snapshot().canonicalState() }
}
