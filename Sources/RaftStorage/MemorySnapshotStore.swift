import Raft

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// `FileSnapshotStore`'s in-memory twin: same visibility (nothing until commit), same retention,
/// same `newest`.
public final class MemorySnapshotStore: SnapshotStore {
  struct Stored {
    var metadata: SnapshotMetadata
    var data: [UInt8]
  }

  let retention: Int
  /// Committed snapshots in index order.
  private(set) var stored: [Stored] = []
  public private(set) var newest: SnapshotMetadata?

  init(retention: Int) {
    self.retention = retention
  }

  /// A copy holding the same committed snapshots (they survive a crash).
  func copy() -> MemorySnapshotStore {
    let copy = MemorySnapshotStore(retention: retention)
    copy.stored = stored
    copy.newest = newest
    return copy
  }

  var oldestRetainedIndex: UInt64? { stored.first?.metadata.index }

  func contains(_ metadata: SnapshotMetadata) -> Bool {
    stored.contains { $0.metadata.position == metadata.position }
  }

  /// The committed snapshots' metadata, oldest first.
  public var retained: [SnapshotMetadata] { stored.map(\.metadata) }

  public func beginWrite(_ metadata: SnapshotMetadata) throws(StorageError) -> any SnapshotSink {
    MemorySnapshotSink(store: self, metadata: metadata)
  }

  public func open(_ metadata: SnapshotMetadata) throws(StorageError) -> any SnapshotSource {
    guard let found = stored.first(where: { $0.metadata.position == metadata.position }) else {
      throw .io(operation: "open", path: "memory:snapshot \(metadata.position)", errno: ENOENT)
    }
    guard found.metadata == metadata else {
      throw .corruption(
        file: "memory:snapshot \(metadata.position)", offset: Int64(SnapshotFileFormat.fixedHeaderSize),
        reason:
          "stored configuration \(found.metadata.configuration) differs from the expected \(metadata.configuration)"
      )
    }
    return MemorySnapshotSource(metadata: found.metadata, data: found.data)
  }

  func commit(_ metadata: SnapshotMetadata, data: [UInt8]) {
    stored.removeAll { $0.metadata.position == metadata.position }
    stored.append(Stored(metadata: metadata, data: data))
    stored.sort { ($0.metadata.index, $0.metadata.term) < ($1.metadata.index, $1.metadata.term) }
    if newest == nil || metadata.index >= newest!.index { newest = metadata }
    if stored.count > retention { stored.removeFirst(stored.count - retention) }
  }
}

final class MemorySnapshotSink: SnapshotSink {
  private let store: MemorySnapshotStore
  private let metadata: SnapshotMetadata
  private var data: [UInt8] = []
  private var finished = false

  init(store: MemorySnapshotStore, metadata: SnapshotMetadata) {
    self.store = store
    self.metadata = metadata
  }

  func write(_ chunk: [UInt8]) throws(StorageError) {
    guard !finished else { throw .misuse("write to a snapshot sink after commit or abort") }
    data.append(contentsOf: chunk)
  }

  func commit() throws(StorageError) {
    guard !finished else { throw .misuse("snapshot sink committed after commit or abort") }
    finished = true
    store.commit(metadata, data: data)
  }

  func abort() {
    finished = true
    data = []
  }
}

final class MemorySnapshotSource: SnapshotSource {
  let metadata: SnapshotMetadata
  private let data: [UInt8]
  private var position = 0

  init(metadata: SnapshotMetadata, data: [UInt8]) {
    self.metadata = metadata
    self.data = data
  }

  var dataSize: Int64 { Int64(data.count) }

  func read(maxBytes: Int) throws(StorageError) -> [UInt8]? {
    precondition(maxBytes > 0)
    guard position < data.count else { return nil }
    let end = min(data.count, position + maxBytes)
    defer { position = end }
    return Array(data[position..<end])
  }

  func close() {}
}
