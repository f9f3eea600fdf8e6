import Foundation
import Raft
@_spi(Testing) import RaftStorage
import Testing

@Suite struct DataDirectoryTests {
  @Test func aMissingDirectoryIsCreatedWithItsLayout() throws {
    let directory = TemporaryDirectory()
    let path = directory.path + "/nested/data"
    let (storage, recovered) = try reopen(path)
    defer { storage.close() }
    #expect(recovered.warnings.isEmpty)
    #expect(String(decoding: Disk.read(path + "/FORMAT"), as: UTF8.self) == "raftdb-data-format 1\n")
    #expect(Disk.list(path) == ["FORMAT", "LOCK", "hardstate", "snapshots", "wal"])
    #expect(Disk.list(path + "/wal") == ["00000000000000000001.wal"])
    #expect(Disk.size(path + "/hardstate") == 512 + HardStateFile.slotLength)
  }

  @Test(arguments: ["raftdb-data-format 2\n", "raftdb-data-format 17", "something else", ""])
  func anUnknownFormatIsRefused(marker: String) throws {
    let directory = TemporaryDirectory()
    try reopen(directory.data).0.close()
    Disk.write(directory.file("FORMAT"), Array(marker.utf8))
    let error = storageError { () throws(StorageError) in try reopen(directory.data) }
    guard case .unsupportedFormat(let path, let found, let supported) = error else {
      Issue.record("expected unsupportedFormat, got \(String(describing: error))")
      return
    }
    #expect(path == directory.data)
    #expect(supported == 1)
    #expect(found.contains(marker.split(separator: "\n").first.map(String.init) ?? "") || marker.isEmpty)
    #expect(error!.description.contains("newer raftdb"))
  }

  @Test func aForeignDirectoryIsNotTakenOver() throws {
    let directory = TemporaryDirectory()
    try reopen(directory.data).0.close()
    try? FileManagerShim.remove(directory.file("FORMAT"))
    Disk.write(directory.file("notes.txt"), Array("mine".utf8))
    guard case .unrecoverable = storageError({ () throws(StorageError) in try reopen(directory.data) }) else {
      Issue.record("a non-empty directory without FORMAT must be refused")
      return
    }
  }

  @Test func anInterruptedInitializationIsRedone() throws {
    let directory = TemporaryDirectory()
    try reopen(directory.data).0.close()
    // As if the process died before FORMAT was renamed into place.
    try FileManagerShim.remove(directory.file("FORMAT"))
    try FileManagerShim.remove(directory.file("wal/00000000000000000001.wal"))
    let (storage, recovered) = try reopen(directory.data)
    defer { storage.close() }
    #expect(recovered.stored.entries.isEmpty)
    #expect(Disk.exists(directory.file("FORMAT")))
  }

  @Test func aDirectoryInUseIsLocked() throws {
    let directory = TemporaryDirectory()
    let (first, _) = try reopen(directory.data)
    guard
      case .io(let operation, _, _) = storageError({ () throws(StorageError) in try reopen(directory.data) })
    else {
      Issue.record("a second open of a directory in use must fail")
      return
    }
    #expect(operation.contains("lock"))
    first.close()
    try reopen(directory.data).0.close()
  }
}

enum FileManagerShim {
  static func remove(_ path: String) throws { try FileManager.default.removeItem(atPath: path) }
}
