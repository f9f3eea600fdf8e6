import Raft

/// One WAL segment file: records for a contiguous run of indexes starting at `firstIndex`.
@_spi(Testing) public final class WALSegment {
  public let firstIndex: UInt64
  public let path: String
  /// Offset of each record, in index order: how a truncation finds where a suffix begins. Nil for
  /// segments recovery did not read because they lie wholly below the recovered snapshot; they are
  /// kept only so that an older snapshot could be restored from, and nothing truncates into them.
  public internal(set) var offsets: [Int64]?
  /// Where the next record goes.
  public internal(set) var end: Int64

  init(firstIndex: UInt64, path: String, offsets: [Int64]?, end: Int64) {
    self.firstIndex = firstIndex
    self.path = path
    self.offsets = offsets
    self.end = end
  }

  var recordCount: Int { offsets?.count ?? 0 }
}

/// The write-ahead log: segment files in `DATA/wal`, appended to by one writer.
///
/// Durability rules it keeps (each justified where it is implemented):
/// - a batch is one `pwrite` of a pre-encoded buffer; `sync()` is one `fdatasync` for all batches
///   since the last one (group commit);
/// - a segment is synced and cut to its exact length before the next one is created, so only the
///   final segment can ever hold a torn record;
/// - a truncation or reset is durable before any record is written after it, so a stale record can
///   never reappear behind new ones after a crash.
final class WriteAheadLog {
  let directory: String
  private let fs: any StorageFileSystem
  private let options: FileStorageOptions
  private(set) var segments: [WALSegment]
  /// The open file of the last segment, the only one written to.
  private var activeFile: any StorageFile
  /// Whether anything was written since the last fdatasync of the active segment.
  private var unsynced = false
  private let buffer = WriteBuffer()

  init(
    directory: String, fileSystem: any StorageFileSystem, options: FileStorageOptions, segments: [WALSegment],
    activeFile: any StorageFile
  ) {
    precondition(!segments.isEmpty && segments.last!.offsets != nil)
    self.directory = directory
    fs = fileSystem
    self.options = options
    self.segments = segments
    self.activeFile = activeFile
  }

  deinit { activeFile.close() }

  private var active: WALSegment { segments[segments.count - 1] }

  /// The index the next appended entry must have.
  var nextIndex: UInt64 { active.firstIndex + UInt64(active.recordCount) }

  /// Appends entries whose first index is `nextIndex` (the caller has checked the batch).
  func append(_ entries: [LogEntry]) throws(StorageError) {
    guard let first = entries.first else { return }
    precondition(first.index == nextIndex, "append at \(first.index), expected \(nextIndex)")
    var size = 0
    for entry in entries { size += WALFormat.recordSize(dataCount: entry.data.count) }
    if active.recordCount > 0 && active.end + Int64(size) > Int64(options.segmentSizeBytes) {
      try rollOver()
    }
    let segment = active
    buffer.reset(reserving: size)
    let offsetsBefore = segment.offsets!.count
    WALFormat.encode(entries, into: buffer, base: segment.end, offsets: &segment.offsets!)
    do {
      try activeFile.writeAll(buffer.bytes, at: segment.end)
    } catch {
      segment.offsets!.removeLast(segment.offsets!.count - offsetsBefore)
      rollBack(to: segment.end)
      throw error
    }
    segment.end += Int64(size)
    unsynced = true
  }

  /// After a failed write: cuts off whatever part of the batch reached the file, so that a later
  /// reopen does not find half a batch. Best effort — the caller is failing the store anyway, and
  /// recovery would treat a partial record at the end as torn.
  private func rollBack(to offset: Int64) {
    do {
      try activeFile.truncate(to: offset)
      try activeFile.dataSync()
    } catch {}
  }

  /// Makes every written record durable. Segments before the active one were synced when it was
  /// created, so one fdatasync covers every batch since the last call.
  func sync() throws(StorageError) {
    guard unsynced else { return }
    try activeFile.dataSync()
    unsynced = false
  }

  /// Removes entries from `index` on, durably. `index` must lie within the loaded part of the log.
  func truncate(from index: UInt64) throws(StorageError) {
    guard index < nextIndex else { return }
    guard let k = segments.lastIndex(where: { $0.firstIndex <= index }), let offsets = segments[k].offsets
    else {
      throw .misuse("truncating from \(index), which lies below the part of the log read at recovery")
    }
    if k < segments.count - 1 {
      activeFile.close()
      // Later segments go first, newest first, each unlink made durable before the next: whatever a
      // crash interrupts, the directory still holds a contiguous prefix of the old log.
      while segments.count > k + 1 {
        try fs.remove(segments.removeLast().path)
        try fs.syncDirectory(directory)
      }
      activeFile = try fs.open(segments[k].path, mode: .readWrite)
    }
    let segment = segments[k]
    let cut = offsets[Int(index - segment.firstIndex)]
    try activeFile.truncate(to: cut)
    // The shortened length must be on disk before new records go where the old ones were.
    try activeFile.dataSync()
    unsynced = false
    segment.offsets!.removeLast(offsets.count - Int(index - segment.firstIndex))
    segment.end = cut
    try preallocate()
  }

  /// Replaces the whole log with an empty one that continues after `index` (a snapshot was
  /// installed), durably.
  func reset(after index: UInt64) throws(StorageError) {
    activeFile.close()
    // Newest first, each unlink durable: an interrupted reset leaves a prefix of the old log, which
    // recovery then finds ending before, or disagreeing with, the snapshot, and resets again.
    while let segment = segments.popLast() {
      try fs.remove(segment.path)
      try fs.syncDirectory(directory)
    }
    let (segment, file) = try Self.createSegment(
      firstIndex: index + 1, directory: directory, fileSystem: fs, options: options)
    segments = [segment]
    activeFile = file
    unsynced = false
  }

  /// Deletes segments holding only entries at or below `index`, oldest first (an interrupted
  /// compaction leaves a suffix that still reaches back to `index`). Never the active segment.
  func compact(through index: UInt64) throws(StorageError) {
    var removed = false
    while segments.count > 1 && segments[1].firstIndex <= index + 1 {
      try fs.remove(segments[0].path)
      segments.removeFirst()
      removed = true
    }
    if removed { try fs.syncDirectory(directory) }
  }

  func close() { activeFile.close() }

  // MARK: - Segments

  private func rollOver() throws(StorageError) {
    let finished = active
    // Cut the preallocated tail and sync: every segment but the last is then exact and durable, so
    // recovery can treat any flaw in one as corruption rather than a torn write.
    try activeFile.truncate(to: finished.end)
    try activeFile.dataSync()
    unsynced = false
    activeFile.close()
    let (segment, file) = try Self.createSegment(
      firstIndex: nextIndex, directory: directory, fileSystem: fs, options: options)
    segments.append(segment)
    activeFile = file
  }

  /// Creates a segment holding just its header, durably (file and directory entry).
  static func createSegment(
    firstIndex: UInt64, directory: String, fileSystem fs: any StorageFileSystem, options: FileStorageOptions
  ) throws(StorageError) -> (WALSegment, any StorageFile) {
    let path = DataLayout.segmentPath(in: directory, firstIndex: firstIndex)
    let file = try fs.open(path, mode: .createNew)
    do {
      try file.writeAll(WALFormat.segmentHeader(firstIndex: firstIndex), at: 0)
      if options.preallocateSegments { _ = try? file.allocate(size: Int64(options.segmentSizeBytes)) }
      try file.dataSync()
      try fs.syncDirectory(directory)
    } catch {
      file.close()
      throw error
    }
    let segment = WALSegment(
      firstIndex: firstIndex, path: path, offsets: [], end: Int64(WALFormat.segmentHeaderSize))
    return (segment, file)
  }

  /// Reserves the active segment's full size again after it was cut. Best effort: preallocation only
  /// makes syncs cheaper, and a full disk will be reported by the writes themselves.
  private func preallocate() throws(StorageError) {
    guard options.preallocateSegments else { return }
    _ = try? activeFile.allocate(size: max(Int64(options.segmentSizeBytes), active.end))
  }
}
