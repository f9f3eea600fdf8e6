import HashTreeCollections

struct EntryHeader {
  var keyCount: UInt32
  var valueCount: UInt32
  var createRevision: UInt64
  var modRevision: UInt64
  var version: UInt64
}

/// The single allocation behind an `Entry`.
final class EntryStorage: ManagedBuffer<EntryHeader, UInt8> {}

/// One stored key: its metadata, key bytes and value bytes in a single allocation, compared and
/// hashed by the key bytes alone so that a `TreeSet<Entry>` is the key-value map.
///
/// One allocation per key is what keeps a million 16-byte-key/256-byte-value entries near 370 bytes
/// each (see docs/STATE_MACHINE.md); a `TreeDictionary<String, …>` pays for a second allocation and
/// a wider slot. Entries are immutable once a snapshot can see them — the state machine fills in
/// `createRevision`/`version` of a new entry within the same `apply` call that inserted it — which is
/// why sharing them across threads is sound (`ManagedBuffer` itself is not `Sendable`, hence this
/// wrapper).
struct Entry: Hashable, @unchecked Sendable {
  let storage: EntryStorage

  private init(_ buffer: ManagedBuffer<EntryHeader, UInt8>) {
    storage = unsafeDowncast(buffer, to: EntryStorage.self)
  }

  static func make(
    key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer,
    createRevision: UInt64, modRevision: UInt64, version: UInt64
  ) -> Entry {
    let buffer = EntryStorage.create(minimumCapacity: key.count + value.count) { _ in
      EntryHeader(
        keyCount: UInt32(key.count), valueCount: UInt32(value.count),
        createRevision: createRevision, modRevision: modRevision, version: version)
    }
    buffer.withUnsafeMutablePointerToElements { elements in
      if let base = key.baseAddress, !key.isEmpty {
        UnsafeMutableRawPointer(elements).copyMemory(from: base, byteCount: key.count)
      }
      if let base = value.baseAddress, !value.isEmpty {
        UnsafeMutableRawPointer(elements + key.count).copyMemory(from: base, byteCount: value.count)
      }
    }
    return Entry(buffer)
  }

  /// A reusable lookup key: lets `get`, `delete` and compare-and-set search without allocating.
  static func makeProbe(capacity: Int) -> Entry {
    let buffer = EntryStorage.create(minimumCapacity: capacity) { _ in
      EntryHeader(keyCount: 0, valueCount: 0, createRevision: 0, modRevision: 0, version: 0)
    }
    return Entry(buffer)
  }

  var keyCount: Int { Int(storage.header.keyCount) }
  var valueCount: Int { Int(storage.header.valueCount) }
  var createRevision: UInt64 { storage.header.createRevision }
  var modRevision: UInt64 { storage.header.modRevision }
  var version: UInt64 { storage.header.version }

  /// Completes a new entry's metadata; see the type's comment for when this is allowed.
  func setCreation(revision: UInt64, version: UInt64) {
    storage.header.createRevision = revision
    storage.header.version = version
  }

  @inline(__always)
  func withKey<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
    try storage.withUnsafeMutablePointers { header, elements in
      try body(UnsafeRawBufferPointer(start: elements, count: Int(header.pointee.keyCount)))
    }
  }

  @inline(__always)
  func withValue<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
    try storage.withUnsafeMutablePointers { header, elements in
      try body(
        UnsafeRawBufferPointer(
          start: elements + Int(header.pointee.keyCount), count: Int(header.pointee.valueCount)))
    }
  }

  var key: String { withKey { String(decoding: $0, as: UTF8.self) } }
  var value: String { withValue { String(decoding: $0, as: UTF8.self) } }

  var record: KVRecord {
    KVRecord(
      value: value, createRevision: createRevision, modRevision: modRevision, version: version)
  }

  static func == (left: Entry, right: Entry) -> Bool {
    if left.storage === right.storage { return true }
    return left.withKey { leftKey in
      right.withKey { rightKey in
        leftKey.count == rightKey.count
          && (leftKey.isEmpty || memcmpBytes(leftKey.baseAddress!, rightKey.baseAddress!, leftKey.count) == 0)
      }
    }
  }

  func hash(into hasher: inout Hasher) {
    withKey { hasher.combine(bytes: $0) }
  }
}

/// A reusable probe for looking keys up without allocating.
/// The record stored under `key`, found with a reusable search probe.
func record(of key: String, in entries: TreeSet<Entry>, probe: inout KeyProbe) -> KVRecord? {
  probe.with(key) { probe in entries.firstIndex(of: probe).map { entries[$0].record } }
}

struct KeyProbe {
  private var entry: Entry
  private var capacity: Int

  init(capacity: Int) {
    self.capacity = Swift.max(capacity, 16)
    entry = Entry.makeProbe(capacity: self.capacity)
  }

  /// Fills the probe with `key` and runs `body` with it. The probe is only ever a search argument,
  /// never stored, so reusing it is safe.
  mutating func with<R>(_ key: UnsafeRawBufferPointer, _ body: (Entry) -> R) -> R {
    if key.count > capacity {
      capacity = key.count
      entry = Entry.makeProbe(capacity: capacity)
    }
    let probe = entry
    probe.storage.withUnsafeMutablePointers { header, elements in
      header.pointee.keyCount = UInt32(key.count)
      if let base = key.baseAddress, !key.isEmpty {
        UnsafeMutableRawPointer(elements).copyMemory(from: base, byteCount: key.count)
      }
    }
    return body(probe)
  }

  mutating func with<R>(_ key: String, _ body: (Entry) -> R) -> R {
    var key = key
    return key.withUTF8 { utf8 in with(UnsafeRawBufferPointer(utf8), body) }
  }
}
