import Raft
@_spi(Testing) import RaftStorage
import Testing

@Suite struct LogRoundTripTests {
  @Test(arguments: StorageKind.allCases)
  func freshStorageRecoversEmpty(kind: StorageKind) throws {
    let harness = try Harness(kind)
    #expect(harness.recovered.stored.entries.isEmpty)
    #expect(harness.recovered.stored.hardState == .initial)
    #expect(harness.recovered.snapshot == nil)
    #expect(harness.recovered.warnings.isEmpty)
    #expect(try harness.storage.sync() == .zero)
  }

  @Test(arguments: StorageKind.allCases)
  func appendSyncRecover(kind: StorageKind) throws {
    let harness = try Harness(kind)
    let entries = Entries.run(1...10, term: 1) + Entries.run(11...25, term: 3)
    try harness.append(Array(entries[0..<10]), hardState: HardState(term: 1, vote: NodeID(2), commit: 0))
    try harness.append(Array(entries[10...]), hardState: HardState(term: 3, vote: nil, commit: 9))
    #expect(try harness.storage.sync() == LogPosition(index: 25, term: 3))
    let recovered = try harness.restart()
    expectLog(recovered.stored.entries, entries)
    #expect(recovered.stored.hardState == HardState(term: 3, vote: nil, commit: 9))
    #expect(recovered.warnings.isEmpty)
    // The log keeps growing across restarts.
    try harness.append(Entries.run(26...30, term: 3))
    try harness.storage.sync()
    expectLog(try harness.restart().stored.entries, entries + Entries.run(26...30, term: 3))
  }

  @Test(arguments: StorageKind.allCases)
  func entryKindsAndEmptyDataSurvive(kind: StorageKind) throws {
    let harness = try Harness(kind)
    let entries = [
      LogEntry(index: 1, term: 1, kind: .configuration, data: testConfiguration.encoded()),
      LogEntry(index: 2, term: 1, kind: .noop, data: []),
      LogEntry(index: 3, term: 1, kind: .command, data: [0, 1, 2]),
    ]
    try harness.append(entries)
    try harness.storage.sync()
    expectLog(try harness.restart().stored.entries, entries)
  }

  @Test func bootstrapStateRoundTrips() throws {
    let harness = try Harness(.file)
    let bootstrap = RaftNode.bootstrap(testConfiguration)
    try harness.storage.write(PersistBatch(entries: bootstrap.entries, hardState: bootstrap.hardState))
    try harness.storage.sync()
    let recovered = try harness.restart()
    expectLog(recovered.stored.entries, bootstrap.entries)
    #expect(recovered.stored.hardState == bootstrap.hardState)
  }

  @Test(arguments: StorageKind.allCases)
  func misuseIsRefusedAndChangesNothing(kind: StorageKind) throws {
    let harness = try Harness(kind, options: FileStorageOptions(maxRecordBytes: 1000))
    try harness.append(Entries.run(1...5, term: 2))
    let attempts: [[LogEntry]] = [
      Entries.run(7...8, term: 2),  // gap
      [Entries.entry(6, term: 2), Entries.entry(8, term: 2)],  // not contiguous
      [Entries.entry(6, term: 3), Entries.entry(7, term: 2)],  // term decreases inside the batch
      [Entries.entry(6, term: 1)],  // term below the previous entry's
      [Entries.entry(3, term: 1)],  // replaces a suffix with a lower term than entry 2's
      [Entries.entry(6, term: 2, size: 2000)],  // record too large
      [Entries.entry(0, term: 2)],  // at or below the floor
    ]
    for batch in attempts {
      let error = storageError { () throws(StorageError) in
        try harness.storage.write(PersistBatch(entries: batch))
      }
      guard case .misuse = error else {
        Issue.record("expected misuse for \(batch.map(\.position)), got \(String(describing: error))")
        continue
      }
    }
    let notCommitted = snapshotMetadata(3, term: 2)
    let error = storageError { () throws(StorageError) in
      try harness.storage.write(PersistBatch(snapshot: notCommitted))
    }
    guard case .misuse = error else {
      Issue.record("installing an uncommitted snapshot: \(String(describing: error))")
      return
    }
    #expect(try harness.storage.sync() == LogPosition(index: 5, term: 2))
    expectLog(try harness.restart().stored.entries, Entries.run(1...5, term: 2))
  }

  @Test(arguments: StorageKind.allCases)
  func writesBeforeRecoverAreRefused(kind: StorageKind) throws {
    let directory = TemporaryDirectory()
    let storage: any RaftStorage =
      kind == .file ? try FileStorage(directory: directory.data, logger: quietLogger) : MemoryStorage()
    let error = storageError { () throws(StorageError) in
      try storage.write(PersistBatch(entries: [Entries.entry(1, term: 1)]))
    }
    guard case .misuse = error else {
      Issue.record("expected misuse, got \(String(describing: error))")
      return
    }
    _ = try storage.recover()
    guard case .misuse = storageError({ () throws(StorageError) in try storage.recover() }) else {
      Issue.record("a second recover() must be refused")
      return
    }
  }
}
