import Foundation
import Raft
@_spi(Testing) import RaftStorage
import Testing

/// Issue 11, item 13: a log that lost committed entries (a WAL truncated exactly at a record
/// boundary looks like a clean end) is refused at start, with the files and the indexes; and no
/// legitimate crash or power loss can produce that state, because the hard state's commit index is
/// never written above entries already made durable.
@Suite struct CommitBeyondLogTests {
  let smallSegments = FileStorageOptions(segmentSizeBytes: 4096)

  /// A single node's pattern: each batch appends entries and commits the previous batch's.
  func writeCommitted(_ storage: FileStorage, through last: UInt64) throws {
    var commit: UInt64 = 0
    for start in stride(from: UInt64(1), through: last, by: 10) {
      try storage.write(
        PersistBatch(
          entries: Entries.run(start...min(start + 9, last), term: 1, size: 150),
          hardState: HardState(term: 1, vote: NodeID(1), commit: commit)))
      try storage.sync()
      commit = min(start + 9, last)
    }
    try storage.write(PersistBatch(hardState: HardState(term: 1, vote: NodeID(1), commit: last)))
    try storage.sync()
  }

  @Test func aWALCutAtARecordBoundaryBelowTheCommitIndexIsRefused() throws {
    let directory = TemporaryDirectory()
    let (storage, _) = try reopen(directory.data)
    try writeCommitted(storage, through: 200)
    let segment = try #require(storage.walSegments.last)
    let cut = try #require(segment.offsets?[Int(121 - segment.firstIndex)])
    storage.close()
    Disk.truncate(segment.path, to: Int(cut))
    let before = Disk.read(segment.path)
    let error = try #require(storageError { () throws(StorageError) in try reopen(directory.data) })
    guard case .unrecoverable(let path, let reason) = error else {
      Issue.record("expected unrecoverable, got \(error)")
      return
    }
    #expect(path == directory.file("hardstate"))
    #expect(reason.contains("commit index is 200") && reason.contains("end at 120"), "\(reason)")
    #expect(reason.contains("entries 121...200 are committed but missing"), "\(reason)")
    #expect(reason.contains(segment.path), "\(reason)")
    #expect(reason.contains("add the node back to the cluster"), "\(reason)")
    // Nothing was changed: no preallocation, no new segment, the hard state as it was.
    #expect(Disk.read(segment.path) == before)
    #expect(Disk.list(directory.file("wal")) == [String(segment.path.split(separator: "/").last!)])
  }

  /// Losing whole newest segments (every later file removed) is refused the same way.
  @Test func lostNewestSegmentsAreRefused() throws {
    let directory = TemporaryDirectory()
    let (storage, _) = try reopen(directory.data, options: smallSegments)
    try writeCommitted(storage, through: 100)
    let segments = storage.walSegments.map(\.path)
    storage.close()
    #expect(segments.count > 2)
    for path in segments.dropFirst(2) { try FileManagerShim.remove(path) }
    let error = storageError { () throws(StorageError) in try reopen(directory.data, options: smallSegments) }
    guard case .unrecoverable(let path, let reason) = error else {
      Issue.record("expected unrecoverable, got \(String(describing: error))")
      return
    }
    #expect(path == directory.file("hardstate"))
    #expect(reason.contains("commit index is 100") && reason.contains(segments[1]), "\(reason)")
  }

  /// With a snapshot: the log removed entirely after it, while the commit index is above it.
  @Test func aLogGoneAboveTheSnapshotIsRefused() throws {
    let harness = try Harness(.file)
    try writeCommitted(harness.file, through: 50)
    try harness.saveSnapshot(snapshotMetadata(30, term: 1))
    harness.file.close()
    for name in Disk.list(harness.directory.file("wal")) {
      try FileManagerShim.remove(harness.directory.file("wal/" + name))
    }
    let error = storageError { () throws(StorageError) in try reopen(harness.directory.data) }
    guard case .unrecoverable(_, let reason) = error else {
      Issue.record("expected unrecoverable, got \(String(describing: error))")
      return
    }
    #expect(reason.contains("snapshot (at 30) end at 30") && reason.contains("31...50"), "\(reason)")
    #expect(reason.contains("00000000000000000030-00000000000000000001.snap"), "\(reason)")
  }

  /// A gap between the snapshot and the first WAL entry names the snapshot and the segment.
  @Test func aGapBetweenSnapshotAndLogNamesBothFiles() throws {
    let harness = try Harness(.file, options: smallSegments)
    try harness.append(Entries.run(1...100, term: 1, size: 150), inBatchesOf: 10)
    try harness.storage.sync()
    try harness.saveSnapshot(snapshotMetadata(5, term: 1))
    let segments = harness.file.walSegments.map(\.path)
    harness.file.close()
    try FileManagerShim.remove(segments[0])
    let error = storageError { () throws(StorageError) in
      try reopen(harness.directory.data, options: smallSegments)
    }
    guard case .unrecoverable(_, let reason) = error else {
      Issue.record("expected unrecoverable, got \(String(describing: error))")
      return
    }
    #expect(reason.contains("are missing") && reason.contains(segments[1]), "\(reason)")
    #expect(reason.contains("00000000000000000005-00000000000000000001.snap"), "\(reason)")
  }

  /// A follower's batch carries new entries and a commit index covering them (the leader's commit
  /// has passed them). The hard state is written before the WAL's fsync, and writeback may put it on
  /// disk while the WAL tail is not: a power loss must never leave a commit index beyond the log,
  /// or the check above would refuse a healthy node.
  @Test(arguments: UInt64(1)...8)
  func aPowerLossNeverLeavesTheCommitIndexBeyondTheLog(seed: UInt64) throws {
    var random = SplitMix64(seed: seed &* 7919)
    for run in 0..<25 {
      let directory = TemporaryDirectory()
      let fs = PowerLossFileSystem()
      let options = FileStorageOptions(segmentSizeBytes: 4096, preallocateSegments: run % 2 == 0)
      let storage = try FileStorage(
        directory: directory.data, options: options, fileSystem: fs, logger: quietLogger)
      _ = try storage.recover()
      fs.callsUntilHalt = random.next() % 4 == 0 ? nil : Int(random.next() % 120)
      var synced: UInt64 = 0
      var last: UInt64 = 0
      do {
        for _ in 0..<(1 + random.next() % 12) {
          let count = 1 + random.next() % 8
          let entries = Entries.run(last + 1...last + count, term: 2, size: 100)
          // The commit covers the entries of this very batch, not yet synced.
          try storage.write(
            PersistBatch(
              entries: entries, hardState: HardState(term: 2, vote: NodeID(1), commit: last + count)))
          last += count
          if random.next() % 3 != 0 {
            try storage.sync()
            synced = last
          }
        }
      } catch {}
      storage.close()
      fs.callsUntilHalt = nil
      fs.powerLoss(&random)
      do {
        let (reopened, recovered) = try PowerLossTests().reopenRepairingAsDocumented(
          directory.data, options: options, repaired: {})
        reopened.close()
        let held = recovered.stored.entries.last?.index ?? 0
        #expect(held >= synced, "seed \(seed) run \(run): synced \(synced), recovered \(held)")
        #expect(recovered.stored.hardState.commit <= held, "seed \(seed) run \(run)")
      } catch {
        Issue.record("seed \(seed) run \(run): a power loss was refused: \(error)")
      }
    }
  }
}
