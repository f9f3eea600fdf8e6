import HashTreeCollections

/// The replicated key-value state: what every replica computes from the committed log.
///
/// Owned by one thread (its Raft group's), so it is a class without locks and not `Sendable`; what
/// crosses threads is the immutable `KVSnapshot`.
public final class KVStateMachine {
  public let limits: KVLimits
  public private(set) var appliedIndex: UInt64 = 0
  /// etcd-style global revision: +1 per applied command that changes data.
  public private(set) var revision: UInt64 = 0
  /// Approximate bytes of keys+values held (for metrics): UTF-8 bytes, without per-key overhead.
  public private(set) var dataBytes = 0
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

  private var entries = TreeSet<Entry>()
  private var idempotency = IdempotencyTable()
  private var probe: KeyProbe

  public init(limits: KVLimits = KVLimits(), supportedClusterVersion: UInt32 = ClusterVersion.latest) {
    // Entries record lengths in 32 bits.
    precondition(
      limits.maxKeyBytes <= Int(UInt32.max) && limits.maxValueBytes <= Int(UInt32.max),
      "keys and values are limited to 4 GiB")
    self.limits = limits
    self.supportedClusterVersion = supportedClusterVersion
    probe = KeyProbe(capacity: limits.maxKeyBytes)
  }

  public var count: Int { entries.count }

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
      result = delete(UnsafeRawBufferPointer(rebasing: bytes[key]))
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
      clusterVersion = max(clusterVersion, version)
      result = .clusterVersion(clusterVersion)
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
    revision += 1
    let revision = revision
    request.forEachPair(in: bytes, count: count, from: firstPair) { key, value in
      store(
        key: UnsafeRawBufferPointer(rebasing: bytes[key]),
        value: UnsafeRawBufferPointer(rebasing: bytes[value]), revision: revision)
    }
    return .put(revision: revision)
  }

  /// Inserts or replaces a key at `revision`, in one traversal of the trie.
  private func store(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, revision: UInt64) {
    let entry = Entry.make(
      key: key, value: value, createRevision: revision, modRevision: revision, version: 1)
    if let previous = entries.update(with: entry) {
      // `entry` became visible to nobody but this state machine a moment ago (snapshots are taken
      // between applies), so completing its metadata now keeps entries immutable to any observer.
      entry.setCreation(revision: previous.createRevision, version: previous.version &+ 1)
      dataBytes += value.count - previous.valueCount
    } else {
      dataBytes += key.count + value.count
    }
  }

  private func delete(_ key: UnsafeRawBufferPointer) -> KVResult {
    let removed = probe.with(key) { entries.remove($0) }
    guard let removed else { return .delete(existed: false, revision: revision) }
    revision += 1
    dataBytes -= removed.keyCount + removed.valueCount
    return .delete(existed: true, revision: revision)
  }

  private func compareAndSet(
    key: UnsafeRawBufferPointer, expected: UnsafeRawBufferPointer?, value: UnsafeRawBufferPointer
  ) -> KVResult {
    let current = probe.with(key) { probe in entries.firstIndex(of: probe).map { entries[$0] } }
    let matches: Bool
    switch (current, expected) {
    case (nil, nil): matches = true
    case (let current?, let expected?): matches = current.withValue { compareBytes($0, expected) == 0 }
    default: matches = false
    }
    guard matches else {
      return .compareAndSet(succeeded: false, current: current?.value, revision: revision)
    }
    revision += 1
    store(key: key, value: value, revision: revision)
    return .compareAndSet(
      succeeded: true, current: String(decoding: value, as: UTF8.self), revision: revision)
  }

  private func compareAndDelete(key: UnsafeRawBufferPointer, expected: UnsafeRawBufferPointer) -> KVResult {
    let current = probe.with(key) { probe in entries.firstIndex(of: probe).map { entries[$0] } }
    guard let current, current.withValue({ compareBytes($0, expected) == 0 }) else {
      return .compareAndSet(succeeded: false, current: current?.value, revision: revision)
    }
    _ = delete(key)  // Bumps the revision.
    return .compareAndSet(succeeded: true, current: nil, revision: revision)
  }

  // MARK: - Reading

  public func get(_ key: String) -> KVRecord? { record(of: key, in: entries, probe: &probe) }

  /// Keys with this prefix in ascending byte order, at most `limit` of them.
  ///
  /// The map is a hash trie with no order, so this scans every key: O(n) prefix comparisons plus
  /// O(m log limit) for the m matches, kept in a bounded heap. Fine for directory-sized listings and
  /// occasional admin scans; a workload that lists constantly would need an ordered index.
  public func list(prefix: String, limit: Int) -> [(key: String, record: KVRecord)] {
    guard limit > 0 else { return [] }
    var prefix = prefix
    let matches = prefix.withUTF8 { prefixBytes in
      smallestKeys(in: entries, limit: limit) { key in
        key.count >= prefixBytes.count
          && (prefixBytes.isEmpty
            || memcmpBytes(key.baseAddress!, prefixBytes.baseAddress!, prefixBytes.count) == 0)
      }
    }
    return matches.map { (key: $0.key, record: $0.record) }
  }

  // MARK: - Snapshots

  /// A frozen point-in-time copy in O(1): the persistent tries are shared, and the next writes copy
  /// only the paths they touch.
  public func snapshot() -> KVSnapshot {
    KVSnapshot(
      appliedIndex: appliedIndex, revision: revision, dataBytes: dataBytes, entries: entries,
      idempotency: idempotency, clusterVersion: clusterVersion)
  }

  /// Replaces the whole state with a serialized snapshot read chunk by chunk (`next` returns nil at
  /// the end). The new state is built aside and swapped in only once the whole stream has checked
  /// out, so on any error nothing changes; the price is holding both states at once for a moment.
  public func restore(appliedIndex: UInt64, reading next: () throws -> [UInt8]?) throws {
    var decoder = KVSnapshotDecoder()
    while let chunk = try next() { try decoder.feed(chunk) }
    let state = try decoder.finish()
    if state.clusterVersion > supportedClusterVersion && supportedClusterVersion == ClusterVersion.initial {
      // A build from before cluster versions cannot read the format that carries one.
      throw KVDecodingError.unsupportedVersion(SnapshotFormat.version)
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
    revision = state.revision
    dataBytes = state.dataBytes
    entries = state.entries
    idempotency = state.idempotency
    clusterVersion = state.clusterVersion
    if clusterVersion > supportedClusterVersion {
      // A snapshot from a cluster that outgrew this build: as for a `setClusterVersion` applied.
      unsupportedClusterVersion = max(unsupportedClusterVersion ?? 0, clusterVersion)
    }
  }
}

/// The `limit` smallest keys (in byte order) of the entries accepted by `include`, ascending.
func smallestKeys(
  in entries: TreeSet<Entry>, limit: Int, where include: (UnsafeRawBufferPointer) -> Bool
) -> [Entry] {
  // A max-heap of the best `limit` so far: its root is the first to be displaced.
  var heap: [Entry] = []
  func less(_ a: Entry, _ b: Entry) -> Bool { a.withKey { a in b.withKey { b in compareBytes(a, b) < 0 } } }
  func siftDown(_ start: Int) {
    var parent = start
    while true {
      let left = 2 * parent + 1
      guard left < heap.count else { return }
      var largest = left
      if left + 1 < heap.count && less(heap[left], heap[left + 1]) { largest = left + 1 }
      guard less(heap[parent], heap[largest]) else { return }
      heap.swapAt(parent, largest)
      parent = largest
    }
  }
  for entry in entries where entry.withKey(include) {
    if heap.count < limit {
      heap.append(entry)
      var child = heap.count - 1
      while child > 0 {
        let parent = (child - 1) / 2
        guard less(heap[parent], heap[child]) else { break }
        heap.swapAt(parent, child)
        child = parent
      }
    } else if less(entry, heap[0]) {
      heap[0] = entry
      siftDown(0)
    }
  }
  heap.sort(by: less)
  return heap
}
