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
/// Writes mutate the persistent indexes in place where no frozen copy shares a node, so every
/// error a transaction can meet is found before its first write (`plan`), and a failed request
/// changes nothing. The state machine (`KVStateMachine`) applies the log's commands to it.
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
  public internal(set) var revision: Int64 = 0
  /// History below this revision is gone; reading it is `compacted`.
  public internal(set) var compactRevision: Int64 = 0
  /// Keys that exist at the current revision.
  public internal(set) var liveKeyCount = 0
  /// Bytes of keys and values held: each indexed key once, and the value of every change kept
  /// (history included). What compaction frees; recomputed exactly when it runs.
  public internal(set) var heldBytes = 0
  /// Bytes of the keys and values that exist at the current revision.
  public internal(set) var liveBytes = 0
  var index = SortedMap<Change>()
  /// Every change since the compacted revision, by revision (`Revision.indexKey`), naming its key:
  /// watchers replay history from here in revision order. The change itself is found in the key's
  /// history, so that this index holds no reference into histories that compaction rebuilds.
  var changesByRevision = SortedMap<[UInt8]>()
  /// Leases by id (8 big-endian bytes), each with the set of keys attached to it.
  var leases = SortedMap<LeaseRecord>()

  struct LeaseRecord: Sendable {
    var grantedTTL: Int64
    var checkpointedTTL: Int64 = 0
    var keys = SortedMap<Bool>()
  }

  public init() {}

  // MARK: - Reads

  /// The key's current state, or nil if it does not exist: the hot path of a plain get.
  public func get(_ key: [UInt8]) -> MVCCKeyValue? {
    guard let newest = index[key], newest.value != nil else { return nil }
    return Self.keyValue(key, newest)
  }

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
    return history(in: range, from: start, through: revision, prevKV: prevKV).events
  }

  /// A bounded piece of the history a watcher replays: the changes to keys in `range` (nil: every
  /// key) at revisions `start...end`, in revision order, with each change's previous state when
  /// `prevKV` is set. It stops at a revision boundary once `maxEvents` events are gathered or
  /// `maxScanned` changes (of any key) have been looked at, so that one piece costs bounded time
  /// however narrow the range; `next` is the first revision not looked at (`end + 1` when done).
  /// The changes of one revision are never split. The caller checks `start > compactRevision`.
  public func history(
    in range: KeyRange?, from start: Int64, through end: Int64, prevKV: Bool,
    maxEvents: Int = .max, maxScanned: Int = .max
  ) -> (events: [WatchEvent], next: Int64) {
    var events: [WatchEvent] = []
    var scanned = 0
    var next = end + 1
    var currentMain: Int64 = -1
    changesByRevision.forEach(from: Revision(main: start).indexKey, below: nil) { at, key in
      let revision = Revision(indexKey: at)
      if revision.main != currentMain {
        guard revision.main <= end else { return false }
        if events.count >= maxEvents || scanned >= maxScanned {
          next = revision.main
          return false
        }
        currentMain = revision.main
      }
      scanned += 1
      guard range?.contains(key) ?? true else { return true }
      events.append(event(key, at: revision, prevKV: prevKV))
      return true
    }
    return (events, next)
  }

  /// The watch event of `key`'s change at `revision`, which the history holds.
  private func event(_ key: [UInt8], at revision: Revision, prevKV: Bool) -> WatchEvent {
    guard let newest = index[key] else { preconditionFailure("a change after compaction lost its key") }
    var change: Change? = newest
    while let current = change, current.revision != revision { change = current.older }
    guard let change else { preconditionFailure("change \(revision) is missing from its key's history") }
    let previous = prevKV ? change.older.flatMap { $0.value == nil ? nil : Self.keyValue(key, $0) } : nil
    guard change.value != nil else {
      let kv = MVCCKeyValue(
        key: key, createRevision: 0, modRevision: revision.main, version: 0, value: [], lease: 0)
      return WatchEvent(type: .delete, kv: kv, prevKV: previous)
    }
    return WatchEvent(type: .put, kv: Self.keyValue(key, change), prevKV: previous)
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
