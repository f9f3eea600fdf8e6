import Raft
@_spi(Testing) import RaftStorage
import Testing

@Suite struct HardStateTests {
  var path: (TemporaryDirectory) -> String { { $0.file("hardstate") } }

  @Test(arguments: StorageKind.allCases)
  func termAndVoteSurvive(kind: StorageKind) throws {
    let harness = try Harness(kind)
    for term in UInt64(1)...5 {
      try harness.storage.write(PersistBatch(hardState: HardState(term: term, vote: NodeID(term), commit: 0)))
      try harness.storage.sync()
      #expect(try harness.restart().stored.hardState == HardState(term: term, vote: NodeID(term), commit: 0))
    }
  }

  /// Commit is a hint: it is written without an fdatasync; term and vote changes are synced.
  @Test func onlyTermAndVoteChangesAreSynced() throws {
    let directory = TemporaryDirectory()
    let fs = FaultInjectingFileSystem()
    let storage = try FileStorage(directory: directory.data, fileSystem: fs, logger: quietLogger)
    _ = try storage.recover()
    // The commit indexes below must lie within the log (recovery refuses one beyond it).
    try storage.write(PersistBatch(entries: Entries.run(1...9, term: 1)))
    try storage.sync()
    func hardStateSyncs(_ state: HardState) throws -> Int {
      fs.clearTrace()
      try storage.write(PersistBatch(hardState: state))
      try storage.sync()
      return fs.trace.filter { $0.operation == .sync && $0.path.hasSuffix("hardstate") }.count
    }
    #expect(try hardStateSyncs(HardState(term: 1, vote: NodeID(1), commit: 0)) == 1)
    #expect(try hardStateSyncs(HardState(term: 1, vote: NodeID(1), commit: 5)) == 0)
    #expect(try hardStateSyncs(HardState(term: 1, vote: NodeID(1), commit: 9)) == 0)
    #expect(try hardStateSyncs(HardState(term: 2, vote: nil, commit: 9)) == 1)
    #expect(try hardStateSyncs(HardState(term: 2, vote: NodeID(3), commit: 9)) == 1)
    storage.close()
    let (reopened, recovered) = try reopen(directory.data)
    defer { reopened.close() }
    #expect(recovered.stored.hardState == HardState(term: 2, vote: NodeID(3), commit: 9))
  }

  /// Writes go to the slot that does not hold the durable value, so damaging the slot written last
  /// leaves the previous value.
  @Test func aDamagedSlotFallsBackToTheOther() throws {
    let harness = try Harness(.file)
    let old = HardState(term: 4, vote: NodeID(2), commit: 3)
    let new = HardState(term: 5, vote: NodeID(3), commit: 3)
    // A log for the commit indexes to lie within (recovery refuses one beyond it).
    try harness.append(Entries.run(1...20, term: 1))
    try harness.storage.sync()
    try harness.storage.write(PersistBatch(hardState: old))
    try harness.storage.sync()
    try harness.storage.write(PersistBatch(hardState: new))
    try harness.storage.sync()
    harness.file.close()
    let file = harness.directory.file("hardstate")
    let slots = Disk.read(file)
    let newSlot = try #require(
      [0, 512].first { HardStateFile.encode(new, sequence: 0)[16..<40] == slots[$0 + 16..<$0 + 40] })
    for offset in [newSlot, newSlot + 20, newSlot + 43] {
      Disk.write(file, slots)
      Disk.flipBit(file, at: offset, bit: 6)
      let (storage, recovered) = try reopen(harness.directory.data)
      storage.close()
      #expect(recovered.stored.hardState == old)
      #expect(recovered.warnings.contains { $0.contains("hardstate") })
    }
  }

  @Test func bothSlotsDamagedIsCorruption() throws {
    let harness = try Harness(.file)
    try harness.storage.write(PersistBatch(hardState: HardState(term: 4, vote: NodeID(2), commit: 3)))
    try harness.storage.sync()
    harness.file.close()
    let file = harness.directory.file("hardstate")
    Disk.flipBit(file, at: 17)
    Disk.flipBit(file, at: 512 + 30)
    let error = storageError { () throws(StorageError) in try reopen(harness.directory.data) }
    #expect(error?.corruptionLocation?.file == file)
    #expect(error?.corruptionLocation?.offset == 0)
  }

  /// A write torn at any byte leaves the old value or the new one, never a mix.
  @Test func aTornWriteLeavesOldOrNew() throws {
    let harness = try Harness(.file)
    let old = HardState(term: 7, vote: NodeID(1), commit: 10)
    let new = HardState(term: 8, vote: NodeID(2), commit: 12)
    // A log for the commit indexes to lie within (recovery refuses one beyond it).
    try harness.append(Entries.run(1...20, term: 1))
    try harness.storage.sync()
    try harness.storage.write(PersistBatch(hardState: old))
    try harness.storage.sync()
    harness.file.close()
    let file = harness.directory.file("hardstate")
    let before = Disk.read(file)
    let (storage, _) = try reopen(harness.directory.data)
    try storage.write(PersistBatch(hardState: new))
    try storage.sync()
    storage.close()
    let after = Disk.read(file)
    let changed = (0..<after.count).filter { before[$0] != after[$0] }
    #expect(!changed.isEmpty && changed.allSatisfy { $0 < 512 } != changed.allSatisfy { $0 >= 512 })
    for cut in 0...HardStateFile.slotLength {
      var torn = before
      let slotStart = changed[0] < 512 ? 0 : 512
      for k in slotStart..<slotStart + cut { torn[k] = after[k] }
      Disk.write(file, torn)
      let (reopened, recovered) = try reopen(harness.directory.data)
      reopened.close()
      let state = recovered.stored.hardState
      #expect(state == old || state == new, "cut at \(cut): \(state)")
      if cut == HardStateFile.slotLength { #expect(state == new) }
    }
  }
}
