/// What a snapshot carries of the multi-version store, and how a store is rebuilt from it: every
/// key with its history (newest change first), every lease, and the two revisions. The indexes
/// derived from these (changes by revision, each lease's keys, the counts) are rebuilt, never
/// read from the stream, so a snapshot cannot make them disagree.
extension MVCCStore {
  /// One change as a snapshot records it.
  public struct ChangeRecord: Hashable, Sendable {
    public var revision: Revision
    /// nil for a tombstone.
    public var value: [UInt8]?
    public var createRevision: Int64
    public var version: Int64
    public var lease: Int64
  }

  /// A lease as a snapshot records it; its keys are those whose current change names it.
  public struct LeaseSnapshotRecord: Hashable, Sendable {
    public var id: Int64
    public var grantedTTL: Int64
    public var checkpointedTTL: Int64
  }

  /// Keys in the index, tombstones whose history is kept included.
  var indexedKeyCount: Int { index.count }
  var leaseCount: Int { leases.count }

  /// Calls `body` with each key from `lower` on (ascending) and its changes, newest first, until it
  /// returns false. A snapshot writer resumes after the last key it wrote (`key + [0]`).
  func forEachHistory(from lower: [UInt8], _ body: ([UInt8], [ChangeRecord]) -> Bool) {
    index.forEach(from: lower, below: nil) { key, newest in
      var changes: [ChangeRecord] = []
      var change: Change? = newest
      while let current = change {
        changes.append(
          ChangeRecord(
            revision: current.revision, value: current.value, createRevision: current.createRevision,
            version: current.version, lease: current.lease))
        change = current.older
      }
      return body(key, changes)
    }
  }

  /// Calls `body` with each live key from `lower` on (ascending) and its current state.
  func forEachLive(from lower: [UInt8], _ body: ([UInt8], MVCCKeyValue) -> Bool) {
    index.forEach(from: lower, below: nil) { key, newest in
      guard newest.value != nil else { return true }
      return body(key, Self.keyValue(key, newest))
    }
  }

  /// Calls `body` with each lease from id `lower` on, ascending, until it returns false.
  func forEachLease(from lower: Int64, _ body: (LeaseSnapshotRecord) -> Bool) {
    leases.forEach(from: Self.leaseKey(lower), below: nil) { key, record in
      body(
        LeaseSnapshotRecord(
          id: key.reduce(0) { $0 << 8 | Int64($1) }, grantedTTL: record.grantedTTL,
          checkpointedTTL: record.checkpointedTTL))
    }
  }

  /// Builds a store from a snapshot's records, checking that they describe a state this store could
  /// have reached: every violation is an `invalidSnapshot` error, never a trap later.
  struct Builder {
    private var store = MVCCStore()
    private var lastKey: [UInt8]?

    init(revision: Int64, compactRevision: Int64) throws(KVDecodingError) {
      guard revision >= 0, compactRevision >= 0, compactRevision <= revision else {
        throw .invalidSnapshot("compacted revision \(compactRevision) is not within 0...\(revision)")
      }
      store.revision = revision
      store.compactRevision = compactRevision
    }

    /// A key of a snapshot from before the multi-version store (format 1 or 2): its current state
    /// only. Such a store starts with its history compacted at the snapshot's revision.
    mutating func addLatest(
      key: [UInt8], value: [UInt8], createRevision: Int64, modRevision: Int64, version: Int64
    ) throws(KVDecodingError) {
      guard store.index[key] == nil else { throw .invalidSnapshot("duplicate key") }
      let change = Change(
        revision: Revision(main: modRevision), value: value, createRevision: createRevision, version: version,
        lease: 0, older: nil)
      store.index.insert(change, forKey: key)
      store.liveKeyCount += 1
      store.heldBytes += key.count + value.count
      store.liveBytes += key.count + value.count
    }

    /// A key and its history, newest change first; keys must come in ascending order.
    mutating func addHistory(key: [UInt8], changes: [ChangeRecord]) throws(KVDecodingError) {
      guard !key.isEmpty else { throw .invalidSnapshot("empty key") }
      if let lastKey, compareKeys(lastKey, key) >= 0 { throw .invalidSnapshot("keys out of order") }
      lastKey = key
      guard !changes.isEmpty else { throw .invalidSnapshot("a key without changes") }
      var older: Change? = nil
      for (position, record) in changes.enumerated().reversed() {
        try check(record, isOldest: position == changes.count - 1, older: older)
        let change = Change(
          revision: record.revision, value: record.value, createRevision: record.createRevision,
          version: record.version, lease: record.lease, older: older)
        if record.revision.main > store.compactRevision {
          let at = record.revision.indexKey
          guard store.changesByRevision[at] == nil else {
            throw .invalidSnapshot("two changes at revision \(record.revision)")
          }
          store.changesByRevision.insert(key, forKey: at)
        }
        store.heldBytes += record.value?.count ?? 0
        older = change
      }
      let newest = older!
      store.index.insert(newest, forKey: key)
      store.heldBytes += key.count
      if let value = newest.value {
        store.liveKeyCount += 1
        store.liveBytes += key.count + value.count
      }
    }

    /// Whether a change fits the store's revisions and the change below it (`older`).
    private func check(_ record: ChangeRecord, isOldest: Bool, older: Change?) throws(KVDecodingError) {
      let main = record.revision.main
      guard main >= 1, main <= store.revision, record.revision.sub >= 0 else {
        throw .invalidSnapshot("change at revision \(record.revision) outside 1...\(store.revision)")
      }
      if let older, older.revision >= record.revision {
        throw .invalidSnapshot("changes of a key out of order")
      }
      // Only the oldest change may be at or below the compacted revision (the key's state there),
      // and it must then be a value: compaction keeps nothing else.
      if main <= store.compactRevision && (!isOldest || record.value == nil) {
        throw .invalidSnapshot("history below the compacted revision")
      }
      guard record.value != nil else {
        guard let older, older.value != nil, record.createRevision == 0, record.version == 0,
          record.lease == 0
        else { throw .invalidSnapshot("a tombstone that deletes nothing") }
        return
      }
      guard record.lease >= 0 else { throw .invalidSnapshot("negative lease") }
      if let older, older.value != nil {
        guard record.version == older.version + 1, record.createRevision == older.createRevision else {
          throw .invalidSnapshot("versions of a key do not follow")
        }
      } else if older != nil || main > store.compactRevision {
        // A new generation: created by this very change.
        guard record.version == 1, record.createRevision == main else {
          throw .invalidSnapshot("a key's first change is not its creation")
        }
      } else {
        guard record.version >= 1, record.createRevision >= 1, record.createRevision <= main,
          record.version - 1 <= main - record.createRevision
        else { throw .invalidSnapshot("inconsistent revisions") }
      }
    }

    mutating func addLease(_ record: LeaseSnapshotRecord) throws(KVDecodingError) {
      guard record.id > 0, record.grantedTTL > 0, record.checkpointedTTL >= 0 else {
        throw .invalidSnapshot("invalid lease \(record.id)")
      }
      let key = MVCCStore.leaseKey(record.id)
      guard store.leases[key] == nil else { throw .invalidSnapshot("duplicate lease \(record.id)") }
      store.leases.insert(
        LeaseRecord(grantedTTL: record.grantedTTL, checkpointedTTL: record.checkpointedTTL), forKey: key)
    }

    /// The store, once every live key's lease is known (each is attached to it).
    func finish() throws(KVDecodingError) -> MVCCStore {
      var store = store
      var attached: [([UInt8], Int64)] = []
      store.index.forEach(from: [], below: nil) { key, newest in
        if newest.value != nil, newest.lease != 0 { attached.append((key, newest.lease)) }
        return true
      }
      for (key, lease) in attached {
        guard store.leases[MVCCStore.leaseKey(lease)] != nil else {
          throw .invalidSnapshot("a key is attached to lease \(lease), which does not exist")
        }
        store.attach(key, to: lease)
      }
      return store
    }
  }
}
