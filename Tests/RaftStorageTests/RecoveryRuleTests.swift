import Raft
@_spi(Testing) import RaftStorage
import Testing

/// How the recovered snapshot and log are reconciled (docs/STORAGE.md, "Recovery").
@Suite struct RecoveryRuleTests {
  @Test(arguments: StorageKind.allCases)
  func theLogContinuesTheSnapshot(kind: StorageKind) throws {
    let harness = try Harness(kind)
    try harness.append(Entries.run(1...10, term: 1) + Entries.run(11...20, term: 2))
    try harness.storage.sync()
    try harness.saveSnapshot(snapshotMetadata(12, term: 2))
    let recovered = try harness.restart()
    #expect(recovered.snapshot == snapshotMetadata(12, term: 2))
    expectLog(recovered.stored.entries, Entries.run(13...20, term: 2))
    #expect(recovered.warnings.isEmpty)
  }

  /// A snapshot received and committed, but the crash came before the log was reset to it.
  @Test(arguments: StorageKind.allCases)
  func aSnapshotWinsOverALogThatDisagreesAtItsIndex(kind: StorageKind) throws {
    let harness = try Harness(kind)
    try harness.append(Entries.run(1...20, term: 1))
    try harness.storage.sync()
    try harness.saveSnapshot(snapshotMetadata(15, term: 2))
    var recovered = try harness.restart()
    #expect(recovered.snapshot == snapshotMetadata(15, term: 2))
    #expect(recovered.stored.entries.isEmpty)
    #expect(recovered.warnings.contains { $0.contains("snapshot wins") })
    try harness.append(Entries.run(16...17, term: 2))
    try harness.storage.sync()
    recovered = try harness.restart()
    expectLog(recovered.stored.entries, Entries.run(16...17, term: 2))
    #expect(recovered.warnings.isEmpty)
  }

  @Test(arguments: StorageKind.allCases)
  func aSnapshotWinsOverALogThatEndsBeforeIt(kind: StorageKind) throws {
    let harness = try Harness(kind)
    try harness.append(Entries.run(1...5, term: 1))
    try harness.storage.sync()
    try harness.saveSnapshot(snapshotMetadata(9, term: 1))
    let recovered = try harness.restart()
    #expect(recovered.snapshot == snapshotMetadata(9, term: 1))
    #expect(recovered.stored.entries.isEmpty)
    #expect(recovered.warnings.contains { $0.contains("ends at 5, before snapshot") })
    try harness.append(Entries.run(10...10, term: 1))
    #expect(try harness.storage.sync() == LogPosition(index: 10, term: 1))
  }

  @Test func aDamagedNewestSnapshotFallsBackToThePreviousOne() throws {
    let harness = try Harness(.file)
    try harness.append(Entries.run(1...30, term: 1))
    try harness.storage.sync()
    try harness.saveSnapshot(snapshotMetadata(10, term: 1), data: [1, 2, 3])
    try harness.saveSnapshot(snapshotMetadata(20, term: 1), data: [4, 5, 6])
    harness.file.close()
    let newest = DataLayout(root: harness.directory.data).snapshot(index: 20, term: 1)
    Disk.flipBit(newest, at: Disk.size(newest) - 10)
    let (storage, recovered) = try reopen(harness.directory.data)
    defer { storage.close() }
    #expect(recovered.snapshot == snapshotMetadata(10, term: 1))
    expectLog(recovered.stored.entries, Entries.run(11...30, term: 1))
    #expect(recovered.warnings.contains { $0.contains(newest) && $0.contains("damaged") })
    #expect(storage.snapshots.newest == snapshotMetadata(10, term: 1))
    // The damaged file is set aside, so it is neither used nor counted for retention again.
    #expect(Disk.exists(newest + ".corrupt"))
    try storage.snapshots.open(snapshotMetadata(10, term: 1)).close()
  }

  /// After a received snapshot reset the log, an older snapshot cannot be completed from the log.
  @Test func aFallbackTheLogDoesNotReachIsUnrecoverable() throws {
    let harness = try Harness(.file)
    try harness.append(Entries.run(1...30, term: 1))
    try harness.storage.sync()
    try harness.saveSnapshot(snapshotMetadata(10, term: 1))
    let received = snapshotMetadata(100, term: 3)
    try harness.saveSnapshot(received)
    try harness.storage.write(PersistBatch(snapshot: received))
    try harness.append(Entries.run(101...110, term: 3))
    try harness.storage.sync()
    harness.file.close()
    let newest = DataLayout(root: harness.directory.data).snapshot(index: 100, term: 3)
    Disk.flipBit(newest, at: 40)
    let error = storageError { () throws(StorageError) in try reopen(harness.directory.data) }
    guard case .unrecoverable(let path, let reason) = error else {
      Issue.record("expected unrecoverable, got \(String(describing: error))")
      return
    }
    #expect(path == harness.directory.data)
    #expect(reason.contains("starts at entry 101") && reason.contains("fallback"))
    // Nothing was changed: the damaged snapshot is still where the operator can find it.
    #expect(Disk.exists(newest))
  }

  @Test func aLogStartingAfterASnapshotGapIsUnrecoverable() throws {
    let harness = try Harness(.file, options: smallSegments)
    try harness.append(Entries.run(1...100, term: 1, size: 150), inBatchesOf: 10)
    try harness.storage.sync()
    harness.file.close()
    // Losing the first segments leaves the log starting well above the (empty) snapshot.
    let wal = harness.directory.file("wal")
    try FileManagerShim.remove(wal + "/" + Disk.list(wal)[0])
    guard
      case .unrecoverable = storageError({ () throws(StorageError) in
        try reopen(harness.directory.data, options: smallSegments)
      })
    else {
      Issue.record("a log that does not reach back to the snapshot must be refused")
      return
    }
  }

  /// Segments wholly below the snapshot are not read: recovery does not even notice damage there.
  @Test func segmentsBelowTheSnapshotAreNotRead() throws {
    let harness = try Harness(.file, options: smallSegments)
    try harness.append(Entries.run(1...200, term: 1, size: 150), inBatchesOf: 10)
    try harness.storage.sync()
    try harness.saveSnapshot(snapshotMetadata(150, term: 1))
    let first = harness.file.walSegments[0]
    harness.file.close()
    Disk.flipBit(first.path, at: Int(first.end) - 5)
    let (storage, recovered) = try reopen(harness.directory.data, options: smallSegments)
    defer { storage.close() }
    expectLog(recovered.stored.entries, Entries.run(151...200, term: 1, size: 150))
    #expect(storage.walSegments[0].offsets == nil)
  }

  @Test func theHardStateCanLagTheLog() throws {
    // The log of a newer term reached the disk, the hard state written with it did not: both are
    // returned as they are, and the core adopts the log's term (RaftNode.init).
    let harness = try Harness(.file)
    try harness.append(Entries.run(1...3, term: 5), hardState: HardState(term: 5, vote: NodeID(1)))
    try harness.storage.sync()
    try harness.append(Entries.run(4...4, term: 6))
    try harness.storage.sync()
    let recovered = try harness.restart()
    #expect(recovered.stored.hardState.term == 5)
    #expect(recovered.stored.entries.last?.term == 6)
  }
}
