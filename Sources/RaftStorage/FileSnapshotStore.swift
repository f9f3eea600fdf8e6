import Logging
import Raft
import Synchronization

/// Snapshots as files in `DATA/snapshots`, one per snapshot (`SnapshotFileFormat`).
///
/// A snapshot becomes visible only by an atomic rename after its contents are fsynced, so a crash
/// leaves either the whole file or a temporary one that recovery deletes. The newest
/// `snapshotsRetained` snapshots are kept: if the newest turns out damaged at startup, the node
/// falls back to the previous one (and compaction keeps the log it needs).
///
/// Threading: `open`, `beginWrite` and a sink's `abort` touch only their own files (and an atomic
/// counter), so the node loop calls them without the storage writer's lock, which is held across
/// fsyncs; committing a sink and recovery change `stored` and run under that lock.
public final class FileSnapshotStore: SnapshotStore {
  struct Stored: Equatable {
    var index: UInt64
    var term: UInt64
  }

  let directory: String
  private let layout: DataLayout
  private let fs: any StorageFileSystem
  private let retention: Int
  private let failure: FailureState
  private let logger: Logger
  /// Committed snapshot files in index order, excluding any that failed verification.
  private(set) var stored: [Stored] = []
  public private(set) var newest: SnapshotMetadata?
  private let temporaryCounter = Atomic<Int>(0)

  init(
    layout: DataLayout, fileSystem: any StorageFileSystem, retention: Int, failure: FailureState,
    logger: Logger
  ) {
    self.layout = layout
    directory = layout.snapshots
    fs = fileSystem
    self.retention = retention
    self.failure = failure
    self.logger = logger
  }

  /// The index of the oldest snapshot kept: compaction keeps the log from there on.
  var oldestRetainedIndex: UInt64? { stored.first?.index }

  public func beginWrite(_ metadata: SnapshotMetadata) throws(StorageError) -> any SnapshotSink {
    try failure.check()
    let counter = temporaryCounter.wrappingAdd(1, ordering: .relaxed).newValue
    let final = layout.snapshot(index: metadata.index, term: metadata.term)
    let temporary = final + DataLayout.temporaryMarker + ".\(counter)"
    let file = try fs.open(temporary, mode: .createOrTruncate)
    let header = SnapshotFileFormat.header(metadata, dataLength: 0)
    do {
      try file.writeAll(header, at: 0)
    } catch {
      file.close()
      try? fs.remove(temporary)
      throw error
    }
    return FileSnapshotSink(
      store: self, metadata: metadata, file: file, temporaryPath: temporary, finalPath: final,
      dataOffset: Int64(header.count))
  }

  public func open(_ metadata: SnapshotMetadata) throws(StorageError) -> any SnapshotSource {
    let file = try fs.open(layout.snapshot(index: metadata.index, term: metadata.term), mode: .readOnly)
    do throws(StorageError) {
      let header = try SnapshotFileFormat.readHeader(file, expected: (metadata.index, metadata.term))
      guard header.metadata == metadata else {
        throw .corruption(
          file: file.path, offset: Int64(SnapshotFileFormat.fixedHeaderSize),
          reason:
            "stored configuration \(header.metadata.configuration) differs from the expected \(metadata.configuration)"
        )
      }
      return FileSnapshotSource(file: file, header: header)
    } catch {
      file.close()
      throw error
    }
  }

  /// Called by a sink once its file is in place: records it and deletes the oldest beyond the
  /// retention count.
  func didCommit(_ metadata: SnapshotMetadata) throws(StorageError) {
    let entry = Stored(index: metadata.index, term: metadata.term)
    stored.removeAll { $0 == entry }
    stored.append(entry)
    stored.sort { ($0.index, $0.term) < ($1.index, $1.term) }
    if newest == nil || metadata.index >= newest!.index { newest = metadata }
    var removed = false
    while stored.count > retention {
      let oldest = stored.removeFirst()
      try fs.remove(layout.snapshot(index: oldest.index, term: oldest.term))
      removed = true
      logger.debug("removed snapshot beyond retention", metadata: ["index": "\(oldest.index)"])
    }
    if removed { try fs.syncDirectory(directory) }
  }

  func guarding<R>(_ body: () throws(StorageError) -> R) throws(StorageError) -> R {
    try failure.guarding(body)
  }

  func removeTemporary(_ path: String) {
    try? fs.remove(path)
  }

  func rename(_ from: String, to: String) throws(StorageError) {
    try fs.rename(from, to: to)
    try fs.syncDirectory(directory)
  }
}

// MARK: - Recovery

extension FileSnapshotStore {
  /// Lists the snapshot files, newest first, and removes interrupted writes.
  func scan() throws(StorageError) -> (candidates: [Stored], warnings: [String]) {
    var candidates: [Stored] = []
    var warnings: [String] = []
    var removed = false
    for name in try fs.listDirectory(directory) {
      let path = directory + "/" + name
      if name.contains(DataLayout.temporaryMarker) {
        try fs.remove(path)
        removed = true
        warnings.append("\(path): removed an unfinished snapshot (its write was interrupted)")
      } else if let (index, term) = DataLayout.parseSnapshotName(name) {
        candidates.append(Stored(index: index, term: term))
      } else if !name.hasSuffix(DataLayout.corruptSuffix) {
        warnings.append("\(path): not a snapshot file name; left alone")
      }
    }
    if removed { try fs.syncDirectory(directory) }
    candidates.sort { ($0.index, $0.term) > ($1.index, $1.term) }
    return (candidates, warnings)
  }

  /// Reads a whole snapshot file and checks its checksum.
  func verify(_ candidate: Stored) throws(StorageError) -> SnapshotMetadata {
    let file = try fs.open(layout.snapshot(index: candidate.index, term: candidate.term), mode: .readOnly)
    defer { file.close() }
    let header = try SnapshotFileFormat.readHeader(file, expected: (candidate.index, candidate.term))
    let source = FileSnapshotSource(file: file, header: header)
    while try source.read(maxBytes: 1 << 20) != nil {}
    return header.metadata
  }

  /// Installs what recovery decided: `valid` (oldest first) are the snapshots in use, `newest` the
  /// one recovery chose. Damaged ones are renamed aside so they are neither used nor counted again.
  func adopt(valid: [Stored], newest: SnapshotMetadata?, quarantine: [Stored]) throws(StorageError)
    -> [String]
  {
    stored = valid.sorted { ($0.index, $0.term) < ($1.index, $1.term) }
    self.newest = newest
    var warnings: [String] = []
    for damaged in quarantine {
      let path = layout.snapshot(index: damaged.index, term: damaged.term)
      try fs.rename(path, to: path + DataLayout.corruptSuffix)
      warnings.append("\(path): renamed to \(path + DataLayout.corruptSuffix)")
    }
    try fs.syncDirectory(directory)
    return warnings
  }
}
