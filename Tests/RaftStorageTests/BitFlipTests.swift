import Raft
@_spi(Testing) import RaftStorage
import Testing

/// Damage that is not a torn write must never be repaired silently: every flipped bit ends in a
/// corruption error naming the file and the record's offset, or in a documented fallback with a
/// warning.
@Suite struct BitFlipTests {
  struct Log {
    let directory: TemporaryDirectory
    let options = smallSegments
    let entries: [LogEntry]
    /// (path, record offsets, end) of each segment.
    let segments: [(path: String, offsets: [Int64], end: Int64)]
  }

  static func writeLog() throws -> Log {
    let harness = try Harness(.file, options: smallSegments)
    let entries = Entries.run(1...120, term: 2, size: 100)
    try harness.append(entries, inBatchesOf: 6)
    try harness.storage.sync()
    let segments = harness.file.walSegments.map { ($0.path, $0.offsets!, $0.end) }
    harness.file.close()
    return Log(directory: harness.directory, entries: entries, segments: segments)
  }

  func expectCorruption(
    _ log: Log, file: String, offset: Int64, _ context: String,
    sourceLocation: SourceLocation = #_sourceLocation
  ) {
    let error = storageError { () throws(StorageError) in try reopen(log.directory.data, options: log.options)
    }
    guard let location = error?.corruptionLocation else {
      Issue.record(
        "\(context): expected corruption, got \(String(describing: error))", sourceLocation: sourceLocation)
      return
    }
    #expect(
      location.file == file && location.offset == offset, "\(context): \(error!)",
      sourceLocation: sourceLocation)
  }

  @Test func aFlipInAClosedSegmentIsCorruptionAtThatRecord() throws {
    let log = try Self.writeLog()
    let segment = log.segments[1]
    let original = Disk.read(segment.path)
    #expect(Int64(original.count) == segment.end)
    // The segment header, then the header, payload prefix and data of the first, a middle and the
    // last record.
    var targets: [(at: Int, record: Int64)] = [(0, 0), (9, 0), (19, 0)]
    for record in [0, segment.offsets.count / 2, segment.offsets.count - 1] {
      let offset = Int(segment.offsets[record])
      for delta in [0, 5, 11, 12, 13, 21, 40] { targets.append((offset + delta, Int64(offset))) }
    }
    for target in targets {
      Disk.write(segment.path, original)
      Disk.flipBit(segment.path, at: target.at, bit: target.at % 8)
      expectCorruption(log, file: segment.path, offset: target.record, "flip at \(target.at)")
    }
    // Cutting a closed segment short is corruption too: it was synced whole before the next existed.
    Disk.write(segment.path, Array(original.dropLast(3)))
    expectCorruption(
      log, file: segment.path, offset: segment.offsets.last!, "closed segment cut short")
  }

  @Test func aFlipInTheMiddleOfTheFinalSegmentIsCorruption() throws {
    let log = try Self.writeLog()
    let segment = log.segments.last!
    #expect(segment.offsets.count >= 4)
    let original = Disk.read(segment.path)
    for record in [0, 1, segment.offsets.count - 2] {
      let offset = Int(segment.offsets[record])
      for delta in [2, 10, 12, 30] {
        Disk.write(segment.path, original)
        Disk.flipBit(segment.path, at: offset + delta, bit: 1)
        expectCorruption(log, file: segment.path, offset: Int64(offset), "record \(record) + \(delta)")
      }
    }
    // The header of the last record: its intact payload follows, so this is no torn write either.
    Disk.write(segment.path, original)
    Disk.flipBit(segment.path, at: Int(segment.offsets.last!) + 3)
    expectCorruption(log, file: segment.path, offset: segment.offsets.last!, "last record's header")
  }

  /// The documented ambiguity: a damaged payload in the very last record looks exactly like a torn
  /// write, so it is cut off with a warning (it was the last thing written).
  @Test func aFlipInTheLastRecordsPayloadIsCutOffWithAWarning() throws {
    let log = try Self.writeLog()
    let segment = log.segments.last!
    Disk.flipBit(segment.path, at: Int(segment.end) - 1)
    let (storage, recovered) = try reopen(log.directory.data, options: log.options)
    defer { storage.close() }
    expectLog(recovered.stored.entries, Array(log.entries.dropLast()))
    #expect(recovered.warnings.contains { $0.contains("payload checksum mismatch") })
  }

  @Test func aFlipInASegmentNameOrHeaderIndexIsCorruption() throws {
    let log = try Self.writeLog()
    let segment = log.segments[1]
    Disk.flipBit(segment.path, at: 15)
    // The index field is covered by the header checksum.
    expectCorruption(log, file: segment.path, offset: 0, "segment header index")
  }

  @Test func everyFlipInTheNewestHardStateSlotFallsBack() throws {
    let harness = try Harness(.file, options: smallSegments)
    let old = HardState(term: 3, vote: NodeID(1), commit: 1)
    let new = HardState(term: 4, vote: NodeID(2), commit: 2)
    // A log for the commit indexes to lie within (recovery refuses one beyond it).
    try harness.append(Entries.run(1...20, term: 1))
    try harness.storage.sync()
    for state in [old, new] {
      try harness.storage.write(PersistBatch(hardState: state))
      try harness.storage.sync()
    }
    harness.file.close()
    let path = harness.directory.file("hardstate")
    let original = Disk.read(path)
    let newSlot = [0, 512].first {
      HardStateFile.encode(new, sequence: 0)[16..<40] == original[$0 + 16..<$0 + 40]
    }!
    for offset in newSlot..<(newSlot + HardStateFile.slotLength) {
      Disk.write(path, original)
      Disk.flipBit(path, at: offset, bit: offset % 8)
      let (storage, recovered) = try reopen(harness.directory.data, options: smallSegments)
      storage.close()
      #expect(recovered.stored.hardState == old, "flip at \(offset)")
      #expect(recovered.warnings.count == 1, "flip at \(offset)")
    }
    // Padding between the slots is not part of either.
    Disk.write(path, original)
    Disk.flipBit(path, at: 300)
    let (storage, recovered) = try reopen(harness.directory.data, options: smallSegments)
    storage.close()
    #expect(recovered.stored.hardState == new)
  }

  @Test func aFlipAnywhereInTheNewestSnapshotFallsBack() throws {
    let harness = try Harness(.file)
    try harness.append(Entries.run(1...40, term: 1))
    try harness.storage.sync()
    try harness.saveSnapshot(snapshotMetadata(10, term: 1), data: Array(repeating: 1, count: 3000))
    try harness.saveSnapshot(snapshotMetadata(30, term: 1), data: Array(repeating: 2, count: 3000))
    harness.file.close()
    let path = DataLayout(root: harness.directory.data).snapshot(index: 30, term: 1)
    let original = Disk.read(path)
    let headerSize = SnapshotFileFormat.fixedHeaderSize + testConfiguration.encoded().count
    // Magic, index, term, data length, configuration, data, checksum, trailer magic.
    for offset in [
      0, 9, 20, 30, 34, 37, headerSize + 5, original.count - 100, original.count - 6, original.count - 2,
    ] {
      Disk.write(path, original)
      Disk.flipBit(path, at: offset, bit: 2)
      let (storage, recovered) = try reopen(harness.directory.data)
      storage.close()
      #expect(recovered.snapshot == snapshotMetadata(10, term: 1), "flip at \(offset)")
      expectLog(recovered.stored.entries, Entries.run(11...40, term: 1), "flip at \(offset)")
      #expect(
        recovered.warnings.contains { $0.contains(path) && $0.contains("damaged") }, "flip at \(offset)")
      // Put it back for the next round (recovery set it aside).
      try FileManagerShim.remove(path + ".corrupt")
    }
  }
}
