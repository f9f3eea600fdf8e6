import Foundation
import Raft
@_spi(Testing) import RaftStorage
import Testing

/// The `identity` file: what a directory says about who it belongs to survives restarts, is
/// replaced whole, and damage is reported with the file and offset rather than read as another
/// identity.
@Suite struct IdentityFileTests {
  let identity = NodeIdentity(
    name: "node01", memberID: NodeID(0x8E9E_05C5_2164_694D), clusterID: 0x0CDE_F123_4567_89AB)

  @Test func anIdentityIsReadBackAfterARestart() throws {
    let directory = TemporaryDirectory()
    do {
      let (storage, _) = try reopen(directory.data)
      defer { storage.close() }
      #expect(try storage.readIdentity() == nil)
      try storage.writeIdentity(identity)
    }
    let (storage, _) = try reopen(directory.data)
    defer { storage.close() }
    #expect(try storage.readIdentity() == identity)
    #expect(!Disk.exists(directory.file("identity.tmp")))
    #expect(Disk.size(directory.file("identity")) == 24 + 6 + 4)

    // Replacing it (a joining node learns its cluster's id) leaves only the new record.
    var joined = identity
    joined.clusterID = 0
    try storage.writeIdentity(joined)
    #expect(try storage.readIdentity() == joined)
  }

  @Test func aReplacementIsSyncedAndRenamedIntoPlace() throws {
    let directory = TemporaryDirectory()
    let fs = FaultInjectingFileSystem()
    let (storage, _) = try reopen(directory.data, fileSystem: fs)
    defer { storage.close() }
    fs.clearTrace()
    try storage.writeIdentity(identity)
    let steps = fs.trace.map { "\($0.operation.rawValue) \(URL(fileURLWithPath: $0.path).lastPathComponent)" }
    #expect(
      steps == [
        "create identity.tmp", "write identity.tmp", "sync identity.tmp", "rename identity.tmp", "sync data",
      ])
  }

  @Test func aFailedReplacementLeavesTheOldIdentity() throws {
    let directory = TemporaryDirectory()
    let fs = FaultInjectingFileSystem()
    let (storage, _) = try reopen(directory.data, fileSystem: fs)
    defer { storage.close() }
    try storage.writeIdentity(identity)
    fs.fail(.sync, pathContains: "identity.tmp")
    var other = identity
    other.name = "node02"
    #expect(storageError { () throws(StorageError) in try storage.writeIdentity(other) } != nil)
    #expect(try storage.readIdentity() == identity)
  }

  /// Every single flipped bit and every truncation is reported as damage at a named offset (or, for
  /// the version field, as a newer format), never decoded as some other identity.
  @Test func damageIsDetectedWithFileAndOffset() throws {
    let directory = TemporaryDirectory()
    let path = directory.file("identity")
    let (storage, _) = try reopen(directory.data)
    defer { storage.close() }
    try storage.writeIdentity(identity)
    let good = Disk.read(path)
    func readBack() -> StorageError? {
      storageError { () throws(StorageError) in _ = try storage.readIdentity() }
    }
    for offset in 0..<good.count {
      for bit in [0, 5] {
        var bytes = good
        bytes[offset] ^= UInt8(1 << bit)
        Disk.write(path, bytes)
        switch readBack() {
        case .corruption(let file, let at, let reason)?:
          #expect(file == path)
          #expect((0...Int64(good.count)).contains(at))
          #expect(reason.contains("POST /remove"), "the error says what to do")
        case .unsupportedFormat?:
          #expect((4..<6).contains(offset), "only the version field reads as another format")
        case let other:
          Issue.record("bit \(bit) of byte \(offset) flipped: \(String(describing: other))")
        }
      }
    }
    for length in 0..<good.count {
      Disk.write(path, Array(good.prefix(length)))
      guard case .corruption(let file, _, _)? = readBack() else {
        Issue.record("a record cut to \(length) bytes was not refused")
        continue
      }
      #expect(file == path)
    }
    var renamed = good
    renamed[25] ^= 0x20  // A letter of the name: "node01" -> "nOde01".
    Disk.write(path, renamed)
    #expect(
      readBack()?.description.hasPrefix("corruption in \(path) at offset 30: checksum mismatch") == true)
    Disk.write(path, good)
    #expect(readBack() == nil)
  }

  /// A directory from a build before identities has `node-name` and no `identity`.
  @Test func aLegacyDirectoryNamesItsOwner() throws {
    let directory = TemporaryDirectory()
    let (storage, _) = try reopen(directory.data)
    defer { storage.close() }
    #expect(try storage.legacyOwner() == nil)
    Disk.write(directory.file("node-name"), Array("node01\n".utf8))
    #expect(try storage.legacyOwner() == "node01")
    #expect(try storage.readIdentity() == nil)
  }

  @Test func idsAreSpelledInHex() {
    #expect(NodeID(0x8E9E_05C5_2164_694D).hex == "8e9e05c52164694d")
    #expect(NodeID(1).hex == "0000000000000001")
    #expect(NodeID(hex: "8E9E05C52164694D") == NodeID(0x8E9E_05C5_2164_694D))
    for bad in ["", "0", "+1", "-1", "0x1f", "1 ", "12345678901234567", "g"] {
      #expect(NodeID(hex: bad) == nil, "\(bad)")
    }
  }
}
