import Raft
@_spi(Testing) import RaftStorage
import Testing

@Suite struct SegmentTests {
  @Test func rolloverClosesExactSegmentsInOrder() throws {
    let harness = try Harness(.file, options: smallSegments)
    let entries = Entries.run(1...200, term: 1, size: 150)
    for chunk in stride(from: 0, to: 200, by: 8) {
      try harness.append(Array(entries[chunk..<min(200, chunk + 8)]))
    }
    try harness.storage.sync()
    let segments = harness.file.walSegments
    #expect(segments.count >= 8)
    let names = Disk.list(harness.directory.file("wal"))
    #expect(names == segments.map { String($0.path.split(separator: "/").last!) })
    #expect(names.first == "00000000000000000001.wal")
    for segment in segments.dropLast() {
      // Closed segments are cut to their last record and never exceed the size (batches fit).
      #expect(Int64(Disk.size(segment.path)) == segment.end)
      #expect(segment.end <= 4096)
    }
    // The active one is preallocated.
    #expect(Disk.size(segments.last!.path) == 4096)
    expectLog(try harness.restart().stored.entries, entries)
    #expect(harness.recovered.warnings.isEmpty)
  }

  @Test func aBatchLargerThanASegmentGetsItsOwnSegment() throws {
    let harness = try Harness(.file, options: smallSegments)
    try harness.append(Entries.run(1...3, term: 1))
    let big = Entries.run(4...40, term: 1, size: 300)
    try harness.append(big)
    try harness.append(Entries.run(41...42, term: 1))
    try harness.storage.sync()
    let firsts = harness.file.walSegments.map(\.firstIndex)
    #expect(firsts == [1, 4, 41])
    expectLog(
      try harness.restart().stored.entries, Entries.run(1...3, term: 1) + big + Entries.run(41...42, term: 1))
  }

  @Test func withoutPreallocationSegmentsGrowAsWritten() throws {
    var options = smallSegments
    options.preallocateSegments = false
    let harness = try Harness(.file, options: options)
    try harness.append(Entries.run(1...5, term: 1, size: 10))
    try harness.storage.sync()
    let segment = harness.file.walSegments.last!
    #expect(Int64(Disk.size(segment.path)) == segment.end)
    expectLog(try harness.restart().stored.entries, Entries.run(1...5, term: 1, size: 10))
  }

  @Test(arguments: StorageKind.allCases)
  func compactionKeepsWhatRetainedSnapshotsNeed(kind: StorageKind) throws {
    let harness = try Harness(kind, options: smallSegments)
    let entries = Entries.run(1...300, term: 2, size: 150)
    for chunk in stride(from: 0, to: 300, by: 10) { try harness.append(Array(entries[chunk..<chunk + 10])) }
    try harness.storage.sync()
    try harness.saveSnapshot(snapshotMetadata(100, term: 2))
    try harness.storage.compact(through: 100)
    try harness.saveSnapshot(snapshotMetadata(250, term: 2))
    try harness.storage.compact(through: 250)
    if kind == .file {
      let segments = harness.file.walSegments
      // Everything above the oldest retained snapshot (100) is still there, nothing wholly below it.
      #expect(segments.first!.firstIndex <= 101)
      #expect(segments[1].firstIndex > 101)
      #expect(segments.count < 300 * 179 / 4096)
    }
    let recovered = try harness.restart()
    #expect(recovered.snapshot == snapshotMetadata(250, term: 2))
    expectLog(recovered.stored.entries, Array(entries[250...]))
    // Misuse: compacted entries cannot be rewritten.
    guard
      case .misuse = storageError({ () throws(StorageError) in
        try harness.storage.write(PersistBatch(entries: [Entries.entry(250, term: 3)]))
      })
    else {
      Issue.record("rewriting an entry covered by the snapshot must be refused")
      return
    }
  }

  /// Around a segment boundary: the segment holding the entry after the snapshot must stay, the ones
  /// wholly at or below the snapshot must go.
  @Test(arguments: [-2, -1, 0, 1])
  func compactionAtASegmentBoundary(offset: Int) throws {
    let harness = try Harness(.file, options: smallSegments)
    let entries = Entries.run(1...120, term: 2, size: 150)
    try harness.append(entries, inBatchesOf: 10)
    try harness.storage.sync()
    let boundary = harness.file.walSegments[2].firstIndex
    let index = UInt64(Int(boundary) + offset)
    try harness.saveSnapshot(snapshotMetadata(index, term: 2))
    try harness.storage.compact(through: index)
    let segments = harness.file.walSegments
    #expect(segments[0].firstIndex <= index + 1)
    #expect(segments.count == 1 || segments[1].firstIndex > index + 1)
    let recovered = try harness.restart()
    expectLog(recovered.stored.entries, Array(entries[Int(index)...]))
  }

  @Test func compactionLetsAnOlderSnapshotStillBeUsed() throws {
    let harness = try Harness(.file, options: smallSegments)
    let entries = Entries.run(1...300, term: 2, size: 150)
    for chunk in stride(from: 0, to: 300, by: 10) { try harness.append(Array(entries[chunk..<chunk + 10])) }
    try harness.storage.sync()
    try harness.saveSnapshot(snapshotMetadata(100, term: 2))
    try harness.saveSnapshot(snapshotMetadata(250, term: 2))
    try harness.storage.compact(through: 250)
    harness.file.close()
    // Damage the newest snapshot: the node must fall back to 100 and find the log from 101 on.
    let newest = DataLayout(root: harness.directory.data).snapshot(index: 250, term: 2)
    Disk.flipBit(newest, at: Disk.size(newest) - 20)
    let (storage, recovered) = try reopen(harness.directory.data, options: smallSegments)
    defer { storage.close() }
    #expect(recovered.snapshot == snapshotMetadata(100, term: 2))
    expectLog(recovered.stored.entries, Array(entries[100...]))
    #expect(recovered.warnings.contains { $0.contains("damaged") })
    #expect(Disk.exists(newest + ".corrupt"))
  }

  @Test func compactionWithoutSnapshotsRemovesNothing() throws {
    let harness = try Harness(.file, options: smallSegments)
    try harness.append(Entries.run(1...100, term: 1, size: 150), inBatchesOf: 10)
    let before = harness.file.walSegments.count
    try harness.storage.compact(through: 90)
    #expect(harness.file.walSegments.count == before)
  }
}
