import HashTreeCollections

/// What a request with an idempotency key produced, kept so that a retry gets the same answer.
struct IdempotencyRecord: Sendable, Hashable {
  var result: KVResult
  /// The original request's timestamp (kept for inspection and carried in snapshots).
  var proposedAtMillis: UInt64
  /// The table's clock when the record was made. Expiry counts from here rather than from
  /// `proposedAtMillis` because the clock is monotonic while a new leader's wall clock may lag the old
  /// one's: records are then made in clock order, so the oldest is always the first to expire.
  var recordedAtMillis: UInt64
  /// Position in insertion order (see `IdempotencyTable.order`).
  var sequence: UInt64
}

/// Remembered results by idempotency key, bounded in count and age.
///
/// Both maps are persistent hash tries, so copying the table into a snapshot is O(1) like the data
/// itself. Insertion order lives in `order` under consecutive sequence numbers: records only leave
/// from the oldest end (by age or by the bound), so `oldest..<next` is always fully populated and
/// "evict the oldest" is a lookup, not a search.
struct IdempotencyTable: Sendable {
  private(set) var records = TreeDictionary<String, IdempotencyRecord>()
  /// Sequence → key and record time; the time is duplicated here so the expiry check made on every
  /// apply costs one lookup.
  private var order = TreeDictionary<UInt64, OrderSlot>()
  private var oldest: UInt64 = 0
  private var next: UInt64 = 0
  /// The highest `proposedAtMillis` applied so far: the only clock replicas agree on.
  private(set) var clockMillis: UInt64 = 0

  var count: Int { records.count }

  /// Moves the clock forward (never back) and drops the records it has expired.
  mutating func advanceClock(to millis: UInt64, ttlMillis: UInt64) {
    if millis > clockMillis { clockMillis = millis }
    while oldest < next {
      guard clockMillis - order[oldest]!.recordedAtMillis >= ttlMillis else { return }
      removeOldest()
    }
  }

  func lookup(_ key: String) -> IdempotencyRecord? { records[key] }

  /// Records a result, first evicting the oldest records to stay within `maxRecords`.
  mutating func record(key: String, result: KVResult, proposedAtMillis: UInt64, maxRecords: Int) {
    guard maxRecords > 0 else { return }
    while records.count >= maxRecords { removeOldest() }
    insert(
      key: key, result: result, proposedAtMillis: proposedAtMillis, recordedAtMillis: clockMillis)
  }

  /// Appends a record as the newest; restore uses it to rebuild the table in its original order.
  mutating func insert(
    key: String, result: KVResult, proposedAtMillis: UInt64, recordedAtMillis: UInt64
  ) {
    let record = IdempotencyRecord(
      result: result, proposedAtMillis: proposedAtMillis, recordedAtMillis: recordedAtMillis,
      sequence: next)
    precondition(records.updateValue(record, forKey: key) == nil, "idempotency key recorded twice")
    order[next] = OrderSlot(key: key, recordedAtMillis: recordedAtMillis)
    next += 1
  }

  mutating func setClock(_ millis: UInt64) { clockMillis = millis }

  private mutating func removeOldest() {
    let slot = order.removeValue(forKey: oldest)!
    records.removeValue(forKey: slot.key)
    oldest += 1
  }

  /// Records from oldest to newest.
  func forEachInOrder(_ body: (String, IdempotencyRecord) throws -> Void) rethrows {
    for sequence in oldest..<next {
      let key = order[sequence]!.key
      try body(key, records[key]!)
    }
  }

  /// An iterator from oldest to newest that a snapshot encoder can keep between chunks.
  struct OrderedIterator {
    fileprivate let table: IdempotencyTable
    fileprivate var sequence: UInt64

    mutating func next() -> (key: String, record: IdempotencyRecord)? {
      guard sequence < table.next else { return nil }
      let key = table.order[sequence]!.key
      sequence += 1
      return (key, table.records[key]!)
    }
  }

  func makeOrderedIterator() -> OrderedIterator { OrderedIterator(table: self, sequence: oldest) }
}

struct OrderSlot: Sendable {
  var key: String
  var recordedAtMillis: UInt64
}

/// Printable ASCII only, so that equality of idempotency keys is byte equality on every replica.
func isValidIdempotencyKey(_ bytes: UnsafeRawBufferPointer, maxBytes: Int) -> Bool {
  guard !bytes.isEmpty, bytes.count <= maxBytes else { return false }
  for byte in bytes where byte < 0x20 || byte > 0x7E { return false }
  return true
}

/// The same rule for a key that has not been proposed yet (the service checks before proposing).
public func isValidIdempotencyKey(_ key: String, maxBytes: Int) -> Bool {
  var key = key
  return key.withUTF8 { isValidIdempotencyKey(UnsafeRawBufferPointer($0), maxBytes: maxBytes) }
}
