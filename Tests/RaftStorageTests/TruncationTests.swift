import Raft
@_spi(Testing) import RaftStorage
import Testing

@Suite struct TruncationTests {
  @Test(arguments: StorageKind.allCases)
  func conflictingSuffixIsReplaced(kind: StorageKind) throws {
    let harness = try Harness(kind)
    try harness.append(Entries.run(1...20, term: 1))
    try harness.storage.sync()
    try harness.append(Entries.run(15...18, term: 2))
    #expect(try harness.storage.sync() == LogPosition(index: 18, term: 2))
    let expected = Entries.run(1...14, term: 1) + Entries.run(15...18, term: 2)
    expectLog(try harness.restart().stored.entries, expected)
  }

  @Test(arguments: StorageKind.allCases)
  func unsyncedEntriesCanBeReplaced(kind: StorageKind) throws {
    let harness = try Harness(kind)
    try harness.append(Entries.run(1...5, term: 1))
    try harness.append(Entries.run(6...9, term: 1))
    try harness.append(Entries.run(4...6, term: 3))
    try harness.storage.sync()
    expectLog(try harness.restart().stored.entries, Entries.run(1...3, term: 1) + Entries.run(4...6, term: 3))
  }

  @Test(arguments: StorageKind.allCases, [UInt64(2), 17, 30, 31, 55, 99, 100])
  func truncationAcrossSegments(kind: StorageKind, from index: UInt64) throws {
    let harness = try Harness(kind, options: smallSegments)
    let old = Entries.run(1...100, term: 1, size: 200)
    for chunk in stride(from: 0, to: 100, by: 10) { try harness.append(Array(old[chunk..<chunk + 10])) }
    try harness.storage.sync()
    let new = Entries.run(index...(index + 4), term: 2, size: 150)
    try harness.append(new)
    try harness.storage.sync()
    let expected = Array(old[..<Int(index - 1)]) + new
    expectLog(try harness.restart().stored.entries, expected)
    if kind == .file {
      let segments = harness.file.walSegments
      #expect(segments.count > 1 || index < 20)
      #expect(Disk.list(harness.directory.file("wal")).count == segments.count)
      #expect(segments.allSatisfy { $0.firstIndex <= index })
    }
  }

  /// The truncation must be on disk before any new record is written where the old ones were:
  /// otherwise a crash could leave new records followed by stale ones.
  @Test func truncationIsDurableBeforeNewRecords() throws {
    let directory = TemporaryDirectory()
    let fs = FaultInjectingFileSystem()
    let storage = try FileStorage(
      directory: directory.data, options: smallSegments, fileSystem: fs, logger: quietLogger)
    _ = try storage.recover()
    for chunk in stride(from: UInt64(1), to: 100, by: 10) {
      try storage.write(PersistBatch(entries: Entries.run(chunk...(chunk + 9), term: 1, size: 200)))
    }
    try storage.sync()
    let segmentsBefore = storage.walSegments.map(\.path)
    let target = storage.walSegments.last { $0.firstIndex <= 30 }!
    fs.clearTrace()
    try storage.write(PersistBatch(entries: Entries.run(30...32, term: 2)))
    let trace = fs.trace.map { "\($0.operation) \($0.path)" }
    let removed = segmentsBefore.filter { $0 != target.path && !storage.walSegments.map(\.path).contains($0) }
    #expect(removed.count >= 2)
    var expected: [String] = []
    for path in removed.reversed() {
      expected += ["remove \(path)", "sync \(directory.file("wal"))"]
    }
    expected += ["truncate \(target.path)", "sync \(target.path)"]
    #expect(Array(trace.prefix(expected.count)) == expected)
    #expect(trace.dropFirst(expected.count).first { $0.hasPrefix("write") } == "write \(target.path)")
  }

  @Test(arguments: StorageKind.allCases)
  func truncatingTheWholeLogKeepsNothingOld(kind: StorageKind) throws {
    let harness = try Harness(kind, options: smallSegments)
    try harness.append(Entries.run(1...60, term: 1, size: 200), inBatchesOf: 10)
    try harness.append(Entries.run(1...3, term: 4))
    try harness.storage.sync()
    expectLog(try harness.restart().stored.entries, Entries.run(1...3, term: 4))
  }
}
