/// A multi-version key-value store with etcd v3's data model: one store revision, taken once by
/// every mutating request (a whole transaction included); for each key its generations of changes,
/// so that any revision since the last compaction can be read; ranges in byte order; transactions of
/// compares and then/else operations; compaction of the history below a revision.
///
/// A value type built on persistent structures: copying a store is O(1) and the copy never changes,
/// so a frozen copy serves `stale` reads and snapshots on other threads. Deterministic: the same
/// requests give the same store and results on every replica, with no clock and no randomness.
///
/// Memory: every change a key has had since the last compaction is kept (one history node, plus the
/// value's bytes); the index holds one node per key that has a change since then, tombstones
/// included. Compaction is what bounds it.
///
/// Not yet wired into the replicated state machine (issue 14 builds on it: leases, watch, the log
/// commands and the snapshot format come next).
public struct MVCCStore: Sendable {
  /// One change of a key, newest first: a persistent list, so that a put prepends in O(1) and a
  /// frozen copy of the store keeps the history it saw.
  final class Change: Sendable {
    let revision: Revision
    /// nil for a delete (a tombstone, which ends the key's generation).
    let value: [UInt8]?
    let createRevision: Int64
    let version: Int64
    let lease: Int64
    let older: Change?

    init(
      revision: Revision, value: [UInt8]?, createRevision: Int64, version: Int64, lease: Int64, older: Change?
    ) {
      self.revision = revision
      self.value = value
      self.createRevision = createRevision
      self.version = version
      self.lease = lease
      self.older = older
    }

    /// The newest change at or before `revision` (main revisions), if any.
    func asOf(_ revision: Int64) -> Change? {
      var change: Change? = self
      while let current = change, current.revision.main > revision { change = current.older }
      return change
    }
  }

  /// The store revision: the main revision of the newest change (0 before the first).
  public private(set) var revision: Int64 = 0
  /// History below this revision is gone; reading it is `compacted`.
  public private(set) var compactRevision: Int64 = 0
  /// Keys that exist at the current revision.
  public private(set) var liveKeyCount = 0
  private var index = SortedMap<Change>()
  /// Every change since the compacted revision, by revision (`Revision.indexKey`), naming its key:
  /// watchers replay history from here in revision order. The change itself is found in the key's
  /// history, so that this index holds no reference into histories that compaction rebuilds.
  private var changesByRevision = SortedMap<[UInt8]>()
  /// Leases by id (8 big-endian bytes), each with the set of keys attached to it.
  private var leases = SortedMap<LeaseRecord>()

  struct LeaseRecord: Sendable {
    var grantedTTL: Int64
    var checkpointedTTL: Int64 = 0
    var keys = SortedMap<Bool>()
  }

  public init() {}

  // MARK: - Reads

  public func range(_ request: RangeRequest) throws(MVCCError) -> RangeResponse {
    let readRevision = request.revision > 0 ? request.revision : revision
    guard readRevision <= revision else { throw .futureRevision }
    guard readRevision >= compactRevision else { throw .compacted(compactRevision: compactRevision) }
    return rangeUnchecked(request, at: readRevision)
  }

  /// A range at `readRevision`, which the caller has checked (a transaction reads its own writes
  /// at the revision it is making).
  func rangeUnchecked(_ request: RangeRequest, at readRevision: Int64) -> RangeResponse {
    let sortOrder: RangeRequest.SortOrder =
      request.sortTarget != .key && request.sortOrder == .none ? .ascend : request.sortOrder
    // As etcd's apply: the limit is pushed down (one more key read, to tell `more`) only when the
    // request asked for no sort order and no filter, decided before NONE with a target other than
    // the key becomes ascending; so such a request sorts the first limit+1 keys by key, not all.
    let filtered =
      request.minModRevision != 0 || request.maxModRevision != 0 || request.minCreateRevision != 0
      || request.maxCreateRevision != 0
    let pushedLimit =
      request.limit > 0 && !filtered && request.sortOrder == .none ? Int(request.limit) + 1 : 0
    var kvs: [MVCCKeyValue] = []
    var count: Int64 = 0
    visit(request.range, at: readRevision) { kv in
      count += 1
      if !request.countOnly && (pushedLimit == 0 || kvs.count < pushedLimit) { kvs.append(kv()) }
    }
    if request.countOnly { return RangeResponse(kvs: [], more: false, count: count) }
    if filtered {
      kvs.removeAll { kv in
        (request.minModRevision != 0 && kv.modRevision < request.minModRevision)
          || (request.maxModRevision != 0 && kv.modRevision > request.maxModRevision)
          || (request.minCreateRevision != 0 && kv.createRevision < request.minCreateRevision)
          || (request.maxCreateRevision != 0 && kv.createRevision > request.maxCreateRevision)
      }
    }
    if sortOrder != .none && !(sortOrder == .ascend && request.sortTarget == .key) {
      let ascending: (MVCCKeyValue, MVCCKeyValue) -> Bool =
        switch request.sortTarget {
        case .key: { compareKeys($0.key, $1.key) < 0 }
        case .version: { $0.version < $1.version }
        case .create: { $0.createRevision < $1.createRevision }
        case .mod: { $0.modRevision < $1.modRevision }
        case .value: { compareKeys($0.value, $1.value) < 0 }
        }
      // Stable, so that keys with equal targets stay in key order: etcd's sort.Sort leaves their order
      // unspecified, and replicas and tests need one answer.
      kvs = stableSorted(kvs, by: sortOrder == .ascend ? ascending : { ascending($1, $0) })
    }
    var more = false
    if request.limit > 0 && kvs.count > Int(request.limit) {
      kvs.removeLast(kvs.count - Int(request.limit))
      more = true
    }
    if request.keysOnly {
      for i in kvs.indices { kvs[i].value = [] }
    }
    return RangeResponse(kvs: kvs, more: more, count: count)
  }

  /// Calls `body` for every key in `range` that exists at `readRevision`, in ascending key order,
  /// with a closure that builds its key-value (so that counting builds none).
  private func visit(_ range: KeyRange, at readRevision: Int64, _ body: (() -> MVCCKeyValue) -> Void) {
    func emit(_ key: [UInt8], _ newest: Change) {
      guard let change = newest.asOf(readRevision), let value = change.value else { return }
      body {
        MVCCKeyValue(
          key: key, createRevision: change.createRevision, modRevision: change.revision.main,
          version: change.version, value: value, lease: change.lease)
      }
    }
    if range.isSingleKey {
      if let newest = index[range.key] { emit(range.key, newest) }
      return
    }
    index.forEach(from: range.lowerBound, below: range.upperBound) { key, newest in
      emit(key, newest)
      return true
    }
  }

  // MARK: - History for watchers

  /// The changes to keys in `range` from revision `start` (0 or below: the next revision, which
  /// is nothing yet) through the current one, in revision order, as a watcher that starts at
  /// `start` receives them. The changes of one revision come in the order they were made.
  /// `prevKV` adds each change's previous value. A start at or below the compacted revision is
  /// `compacted`: that history is gone (a compaction at R keeps the state at R but not the
  /// deletes made at R), and the watcher must start again after it. etcd accepts a start equal to
  /// the compacted revision and may then miss such deletes; this store refuses it instead.
  public func events(in range: KeyRange, from start: Int64, prevKV: Bool = false) throws(MVCCError)
    -> [WatchEvent]
  {
    let start = start > 0 ? start : revision + 1
    guard start > compactRevision else { throw .compacted(compactRevision: compactRevision) }
    var events: [WatchEvent] = []
    changesByRevision.forEach(from: Revision(main: start).indexKey, below: nil) { at, key in
      guard range.contains(key) else { return true }
      guard let newest = index[key] else { preconditionFailure("a change after compaction lost its key") }
      let revision = Revision(indexKey: at)
      var change: Change? = newest
      while let current = change, current.revision != revision { change = current.older }
      guard let change else { preconditionFailure("change \(revision) is missing from its key's history") }
      let previous = prevKV ? change.older.flatMap { $0.value == nil ? nil : Self.keyValue(key, $0) } : nil
      if change.value == nil {
        let kv = MVCCKeyValue(
          key: key, createRevision: 0, modRevision: revision.main, version: 0, value: [], lease: 0)
        events.append(WatchEvent(type: .delete, kv: kv, prevKV: previous))
      } else {
        events.append(WatchEvent(type: .put, kv: Self.keyValue(key, change), prevKV: previous))
      }
      return true
    }
    return events
  }

  // MARK: - Leases

  /// Creates lease `id` with `ttl` seconds. The proposer chooses the id (etcd's leader picks one
  /// when the client leaves it 0) so that every replica applies the same one.
  public mutating func grant(lease id: Int64, ttl: Int64) throws(MVCCError) {
    guard id > 0 else { throw .invalidLeaseID }
    guard leases[Self.leaseKey(id)] == nil else { throw .leaseExists }
    leases.insert(LeaseRecord(grantedTTL: ttl), forKey: Self.leaseKey(id))
  }

  /// Deletes lease `id` and, at one new revision (if it has any), every key attached to it, in key
  /// order. This is how a lease expires too: the leader proposes the revoke, so every replica
  /// deletes the same keys at the same revision. Returns how many keys were deleted.
  @discardableResult
  public mutating func revoke(lease id: Int64) throws(MVCCError) -> Int64 {
    guard let lease = leases[Self.leaseKey(id)] else { throw .leaseNotFound }
    var keys: [[UInt8]] = []
    lease.keys.forEach(from: [], below: nil) { key, _ in
      keys.append(key)
      return true
    }
    var writer = Writer(store: self, base: self, main: revision + 1)
    var deleted: Int64 = 0
    for key in keys {
      deleted += try writer.deleteRange(DeleteRangeRequest(range: KeyRange(key: key))).deleted
    }
    writer.store.leases.remove(Self.leaseKey(id))
    let changed = writer.sub > 0
    self = writer.store
    if changed { revision += 1 }
    return deleted
  }

  /// Records the remaining TTL the leader computed for lease `id`.
  public mutating func checkpoint(lease id: Int64, remainingTTL: Int64) throws(MVCCError) {
    guard var lease = leases[Self.leaseKey(id)] else { throw .leaseNotFound }
    lease.checkpointedTTL = remainingTTL
    leases.insert(lease, forKey: Self.leaseKey(id))
  }

  /// Lease `id` with its keys, or nil.
  public func lease(_ id: Int64) -> Lease? {
    guard let record = leases[Self.leaseKey(id)] else { return nil }
    var keys: [[UInt8]] = []
    record.keys.forEach(from: [], below: nil) { key, _ in
      keys.append(key)
      return true
    }
    return Lease(id: id, grantedTTL: record.grantedTTL, checkpointedTTL: record.checkpointedTTL, keys: keys)
  }

  /// Every lease id, ascending.
  public var leaseIDs: [Int64] {
    var ids: [Int64] = []
    leases.forEach(from: [], below: nil) { key, _ in
      ids.append(key.reduce(0) { $0 << 8 | Int64($1) })
      return true
    }
    return ids
  }

  static func leaseKey(_ id: Int64) -> [UInt8] {
    stride(from: 56, through: 0, by: -8).map { UInt8(truncatingIfNeeded: id >> $0) }
  }

  // MARK: - Writes

  /// Applies a transaction: its compares decide the branch, whose operations apply in order at
  /// one new revision (none if the branch changes nothing), and later operations read what earlier
  /// ones wrote. Throws, changing nothing, on a duplicate key, an empty key, or an `ignoreValue` or
  /// `ignoreLease` on a missing key.
  public mutating func txn(_ request: TxnRequest) throws(MVCCError) -> TxnResponse {
    try Self.checkIntervals(request.success)
    try Self.checkIntervals(request.failure)
    var writer = Writer(store: self, base: self, main: revision + 1)
    let response = try writer.txn(request)
    if writer.sub > 0 {
      self = writer.store
      revision += 1
    }
    return response
  }

  public mutating func put(_ request: PutRequest) throws(MVCCError) -> PutResponse {
    guard case .put(let response) = try txn(TxnRequest(success: [.put(request)])).responses[0] else {
      preconditionFailure("a put answers with a put")
    }
    return response
  }

  public mutating func deleteRange(_ request: DeleteRangeRequest) throws(MVCCError) -> DeleteRangeResponse {
    guard case .deleteRange(let response) = try txn(TxnRequest(success: [.deleteRange(request)])).responses[0]
    else { preconditionFailure("a delete answers with a delete") }
    return response
  }

  /// Drops the history below `revision`: afterwards a key keeps only its changes after `revision`
  /// and, if it existed at `revision`, the change that it had then; a key deleted at or before
  /// `revision` is gone. O(keys with history).
  public mutating func compact(_ revision: Int64) throws(MVCCError) {
    guard revision > compactRevision else { throw .compacted(compactRevision: compactRevision) }
    guard revision <= self.revision else { throw .futureRevision }
    var compacted = SortedMap<Change>()
    index.forEach(from: [], below: nil) { key, newest in
      if let kept = Self.compact(newest, at: revision) { compacted.insert(kept, forKey: key) }
      return true
    }
    index = compacted
    var remaining = SortedMap<[UInt8]>()
    changesByRevision.forEach(from: Revision(main: revision + 1).indexKey, below: nil) { at, key in
      remaining.insert(key, forKey: at)
      return true
    }
    changesByRevision = remaining
    compactRevision = revision
  }

  /// The changes of one key that survive a compaction at `revision`, or nil if none do.
  private static func compact(_ newest: Change, at revision: Int64) -> Change? {
    var newer: [Change] = []
    var change: Change? = newest
    while let current = change, current.revision.main > revision {
      newer.append(current)
      change = current.older
    }
    // `change` is now the key's state at `revision`: kept only if it is a value.
    var kept: Change? = nil
    if let atRevision = change, atRevision.value != nil {
      kept =
        atRevision.older == nil
        ? atRevision
        : Change(
          revision: atRevision.revision, value: atRevision.value, createRevision: atRevision.createRevision,
          version: atRevision.version, lease: atRevision.lease, older: nil)
    }
    if newer.isEmpty { return kept }
    if newer.last!.older === kept { return newest }  // Nothing below was dropped.
    for current in newer.reversed() {
      kept = Change(
        revision: current.revision, value: current.value, createRevision: current.createRevision,
        version: current.version, lease: current.lease, older: kept)
    }
    return kept
  }

  /// etcd's checkIntervals: within one branch no key is put twice, and no put falls in a range the
  /// branch deletes; a nested transaction's then and else branches may put the same key (only one
  /// of them runs).
  @discardableResult
  static func checkIntervals(_ operations: [RequestOp]) throws(MVCCError) -> (
    puts: Set<[UInt8]>, deletes: [KeyRange]
  ) {
    var deletes: [KeyRange] = []
    for case .deleteRange(let delete) in operations { deletes.append(delete.range) }
    func deleted(_ key: [UInt8]) -> Bool { deletes.contains { $0.contains(key) } }
    var puts = Set<[UInt8]>()
    for case .txn(let nested) in operations {
      let then = try checkIntervals(nested.success)
      let otherwise = try checkIntervals(nested.failure)
      for key in then.puts {
        guard !puts.contains(key), !deleted(key) else { throw .duplicateKey }
        puts.insert(key)
      }
      for key in otherwise.puts {
        guard !puts.contains(key) || then.puts.contains(key), !deleted(key) else { throw .duplicateKey }
        puts.insert(key)
      }
      deletes += then.deletes + otherwise.deletes
    }
    for case .put(let put) in operations {
      guard !puts.contains(put.key), !deleted(put.key) else { throw .duplicateKey }
      puts.insert(put.key)
    }
    return (puts, deletes)
  }

  /// Applies one transaction's operations to a working copy of the store.
  private struct Writer {
    var store: MVCCStore
    /// The store before the transaction: every compare, nested ones included, reads it (etcd's
    /// `compareToPath` evaluates the whole path before anything is written), and a range's
    /// explicit revision may not be above it.
    let base: MVCCStore
    let main: Int64
    /// Changes made so far at `main`.
    var sub: Int64 = 0

    /// What operations read: the revision being made once it has a change.
    var readRevision: Int64 { sub > 0 ? main : main - 1 }

    mutating func txn(_ request: TxnRequest) throws(MVCCError) -> TxnResponse {
      let succeeded = request.compare.allSatisfy(evaluate)
      var responses: [ResponseOp] = []
      for operation in succeeded ? request.success : request.failure {
        responses.append(try apply(operation))
      }
      return TxnResponse(succeeded: succeeded, responses: responses)
    }

    func evaluate(_ compare: Compare) -> Bool {
      let kvs = base.rangeUnchecked(RangeRequest(range: compare.range), at: base.revision).kvs
      guard !kvs.isEmpty else {
        if case .value = compare.target { return false }
        return Self.holds(
          compare,
          for: MVCCKeyValue(
            key: compare.range.key, createRevision: 0, modRevision: 0, version: 0, value: [], lease: 0))
      }
      return kvs.allSatisfy { Self.holds(compare, for: $0) }
    }

    static func holds(_ compare: Compare, for kv: MVCCKeyValue) -> Bool {
      let order: Int =
        switch compare.target {
        case .value(let value): compareKeys(kv.value, value)
        case .version(let version): kv.version < version ? -1 : (kv.version > version ? 1 : 0)
        case .create(let create): kv.createRevision < create ? -1 : (kv.createRevision > create ? 1 : 0)
        case .mod(let mod): kv.modRevision < mod ? -1 : (kv.modRevision > mod ? 1 : 0)
        case .lease(let lease): kv.lease < lease ? -1 : (kv.lease > lease ? 1 : 0)
        }
      switch compare.result {
      case .equal: return order == 0
      case .notEqual: return order != 0
      case .less: return order < 0
      case .greater: return order > 0
      }
    }

    mutating func apply(_ operation: RequestOp) throws(MVCCError) -> ResponseOp {
      switch operation {
      case .range(let request):
        // No revision: what the transaction has written so far is read too (etcd's
        // storeTxnWrite.Range). A revision is checked against the store before the transaction.
        guard request.revision > 0 else { return .range(store.rangeUnchecked(request, at: readRevision)) }
        return .range(try base.range(request))
      case .put(let request):
        return .put(try put(request))
      case .deleteRange(let request):
        return .deleteRange(try deleteRange(request))
      case .txn(let nested):
        return .txn(try txn(nested))
      }
    }

    mutating func put(_ request: PutRequest) throws(MVCCError) -> PutResponse {
      guard !request.key.isEmpty else { throw .emptyKey }
      let newest = store.index[request.key]
      let current = newest.flatMap { $0.value == nil ? nil : $0 }
      if (request.ignoreValue || request.ignoreLease) && current == nil { throw .keyNotFound }
      let previous = current.map { MVCCStore.keyValue(request.key, $0) }
      let lease = request.ignoreLease ? current!.lease : request.lease
      if lease != 0 && store.leases[MVCCStore.leaseKey(lease)] == nil { throw .leaseNotFound }
      if let old = current?.lease, old != lease { store.detach(request.key, from: old) }
      if lease != 0 { store.attach(request.key, to: lease) }
      let revision = Revision(main: main, sub: sub)
      sub += 1
      let change = Change(
        revision: revision, value: request.ignoreValue ? current!.value : request.value,
        createRevision: current?.createRevision ?? main, version: (current?.version ?? 0) + 1,
        lease: lease, older: newest)
      store.index.insert(change, forKey: request.key)
      store.changesByRevision.insert(request.key, forKey: revision.indexKey)
      if current == nil { store.liveKeyCount += 1 }
      return PutResponse(prevKV: request.prevKV ? previous : nil)
    }

    mutating func deleteRange(_ request: DeleteRangeRequest) throws(MVCCError) -> DeleteRangeResponse {
      guard !request.range.key.isEmpty else { throw .emptyKey }
      var doomed: [([UInt8], Change)] = []
      if request.range.isSingleKey {
        if let newest = store.index[request.range.key], newest.value != nil {
          doomed.append((request.range.key, newest))
        }
      } else {
        store.index.forEach(from: request.range.lowerBound, below: request.range.upperBound) { key, newest in
          if newest.value != nil { doomed.append((key, newest)) }
          return true
        }
      }
      var previous: [MVCCKeyValue] = []
      for (key, newest) in doomed {
        if request.prevKV { previous.append(MVCCStore.keyValue(key, newest)) }
        let tombstone = Change(
          revision: Revision(main: main, sub: sub), value: nil, createRevision: 0, version: 0, lease: 0,
          older: newest)
        sub += 1
        store.index.insert(tombstone, forKey: key)
        store.changesByRevision.insert(key, forKey: tombstone.revision.indexKey)
        store.liveKeyCount -= 1
        store.detach(key, from: newest.lease)
      }
      return DeleteRangeResponse(deleted: Int64(doomed.count), prevKVs: previous)
    }
  }

  private mutating func attach(_ key: [UInt8], to lease: Int64) {
    guard var record = leases[Self.leaseKey(lease)] else { return }
    record.keys.insert(true, forKey: key)
    leases.insert(record, forKey: Self.leaseKey(lease))
  }

  private mutating func detach(_ key: [UInt8], from lease: Int64) {
    guard lease != 0, var record = leases[Self.leaseKey(lease)], record.keys.remove(key) else { return }
    leases.insert(record, forKey: Self.leaseKey(lease))
  }

  static func keyValue(_ key: [UInt8], _ change: Change) -> MVCCKeyValue {
    MVCCKeyValue(
      key: key, createRevision: change.createRevision, modRevision: change.revision.main,
      version: change.version, value: change.value ?? [], lease: change.lease)
  }
}

/// A stable sort (insertion into runs merged bottom-up), since the standard library's `sort` does
/// not promise stability.
func stableSorted<T>(_ items: [T], by less: (T, T) -> Bool) -> [T] {
  var source = items
  var target = items
  var width = 1
  while width < source.count {
    var start = 0
    while start < source.count {
      let middle = Swift.min(start + width, source.count)
      let end = Swift.min(start + 2 * width, source.count)
      var (i, j, k) = (start, middle, start)
      while i < middle && j < end {
        if less(source[j], source[i]) {
          target[k] = source[j]
          j += 1
        } else {
          target[k] = source[i]
          i += 1
        }
        k += 1
      }
      while i < middle { target[k] = source[i]; i += 1; k += 1 }
      while j < end { target[k] = source[j]; j += 1; k += 1 }
      start += 2 * width
    }
    swap(&source, &target)
    width *= 2
  }
  return source
}
