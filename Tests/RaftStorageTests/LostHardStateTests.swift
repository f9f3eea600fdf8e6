import Foundation
import Raft
@_spi(Testing) import RaftStorage
import Testing

/// Issue 11, item 12: an initialized directory whose hard state is gone (empty, missing, or with no
/// valid slot) is refused, naming the file and the way back; only an interrupted initialization
/// (no FORMAT yet) starts from the initial hard state.
@Suite struct LostHardStateTests {
  /// A directory that has been used: the node voted in term 7.
  func usedDirectory() throws -> TemporaryDirectory {
    let directory = TemporaryDirectory()
    let (storage, _) = try reopen(directory.data)
    try storage.write(
      PersistBatch(
        entries: Entries.run(1...3, term: 7), hardState: HardState(term: 7, vote: NodeID(2), commit: 2)))
    try storage.sync()
    storage.close()
    return directory
  }

  enum Damage: String, CaseIterable, CustomTestStringConvertible {
    case emptied, removed, zeroed
    var testDescription: String { rawValue }
  }

  @Test(arguments: Damage.allCases)
  func aLostHardStateIsRefused(damage: Damage) throws {
    let directory = try usedDirectory()
    let file = directory.file("hardstate")
    switch damage {
    case .emptied: Disk.write(file, [])
    case .removed: try FileManagerShim.remove(file)
    case .zeroed: Disk.write(file, [UInt8](repeating: 0, count: 512 + HardStateFile.slotLength))
    }
    let before = Disk.exists(file) ? Disk.read(file) : nil
    let error = try #require(storageError { () throws(StorageError) in try reopen(directory.data) })
    let text = error.description
    #expect(text.contains(file), "\(text)")
    #expect(text.contains("term and vote are lost"), "\(text)")
    #expect(text.contains("add the node back to the cluster with an empty directory"), "\(text)")
    switch error {
    case .corruption(let path, let offset, _):
      #expect(damage != .removed)
      #expect(path == file && offset == 0)
    case .unrecoverable(let path, _):
      #expect(damage == .removed)
      #expect(path == file)
    default: Issue.record("unexpected \(error)")
    }
    // Refusing changed nothing: the file is not re-created or filled in.
    #expect((Disk.exists(file) ? Disk.read(file) : nil) == before)
  }

  /// Initialization writes and syncs the hard state before FORMAT: without FORMAT, an empty or
  /// missing hard state is an interrupted initialization, which is simply done again.
  @Test(arguments: [Damage.emptied, .removed])
  func anInterruptedInitializationStartsFresh(damage: Damage) throws {
    let directory = TemporaryDirectory()
    try reopen(directory.data).0.close()
    try FileManagerShim.remove(directory.file("FORMAT"))
    try FileManagerShim.remove(directory.file("wal/00000000000000000001.wal"))
    switch damage {
    case .emptied: Disk.write(directory.file("hardstate"), [])
    default: try FileManagerShim.remove(directory.file("hardstate"))
    }
    let (storage, recovered) = try reopen(directory.data)
    storage.close()
    #expect(recovered.stored.hardState == .initial)
    #expect(recovered.warnings.isEmpty)
    #expect(Disk.exists(directory.file("FORMAT")))
    #expect(Disk.size(directory.file("hardstate")) == 512 + HardStateFile.slotLength)
  }

  /// The hard state's directory entry is synced before FORMAT is renamed into place, so a power
  /// loss at any point of initialization leaves either no FORMAT or a valid hard state.
  @Test(arguments: 0..<40)
  func aPowerLossDuringInitializationNeverLeavesFormatWithoutHardState(haltAfter: Int) throws {
    var random = SplitMix64(seed: UInt64(haltAfter) &+ 17)
    for _ in 0..<4 {
      let directory = TemporaryDirectory()
      try FileManager.default.createDirectory(atPath: directory.data, withIntermediateDirectories: true)
      let fs = PowerLossFileSystem()
      fs.callsUntilHalt = haltAfter
      if let (storage, _) = try? reopen(directory.data, fileSystem: fs) { storage.close() }
      fs.callsUntilHalt = nil
      fs.powerLoss(&random)
      do {
        let (storage, recovered) = try reopen(directory.data)
        storage.close()
        #expect(recovered.stored.hardState == .initial)
      } catch {
        Issue.record("halted after \(haltAfter) calls: \(error)")
      }
    }
  }
}
