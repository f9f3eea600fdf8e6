import Raft
@_spi(Testing) import RaftStorage
import Testing

@Suite struct SnapshotStoreTests {
  static func data(_ count: Int, seed: UInt64 = 1) -> [UInt8] {
    Entries.data(index: seed, term: 99, size: count)
  }

  static func readAll(_ source: any SnapshotSource, chunk: Int) throws(StorageError) -> [UInt8] {
    var result: [UInt8] = []
    while let next = try source.read(maxBytes: chunk) {
      #expect(next.count <= chunk)
      result += next
    }
    return result
  }

  @Test(arguments: StorageKind.allCases, [0, 1, 5000, 3 << 20])
  func writeCommitOpen(kind: StorageKind, size: Int) throws {
    let harness = try Harness(kind)
    let metadata = SnapshotMetadata(
      index: 42, term: 7,
      configuration: Configuration(members: [
        Member(id: NodeID(1), isVoter: true, context: Array("node01 10.0.0.1:7001".utf8)),
        Member(id: NodeID(4), isVoter: false),
      ]))
    let payload = Self.data(size)
    let sink = try harness.storage.snapshots.beginWrite(metadata)
    for start in stride(from: 0, to: size, by: 4000) {
      try sink.write(Array(payload[start..<min(size, start + 4000)]))
    }
    #expect(harness.storage.snapshots.newest == nil)
    try sink.commit()
    #expect(harness.storage.snapshots.newest == metadata)
    for reopened in [false, true] {
      if reopened { try harness.restart() }
      let source = try harness.storage.snapshots.open(metadata)
      #expect(source.metadata == metadata)
      #expect(source.dataSize == Int64(size))
      #expect(try Self.readAll(source, chunk: 1 << 16) == payload)
      source.close()
    }
    #expect(harness.recovered.snapshot == metadata)
    #expect(harness.recovered.stored.snapshot == metadata)
  }

  @Test(arguments: StorageKind.allCases)
  func abortLeavesNothing(kind: StorageKind) throws {
    let harness = try Harness(kind)
    let sink = try harness.storage.snapshots.beginWrite(snapshotMetadata(10, term: 1))
    try sink.write(Self.data(100))
    sink.abort()
    #expect(harness.storage.snapshots.newest == nil)
    if kind == .file { #expect(Disk.list(harness.directory.file("snapshots")).isEmpty) }
    #expect(try harness.restart().snapshot == nil)
    #expect(harness.recovered.warnings.isEmpty)
  }

  @Test func interruptedWriteIsRemovedAtRecovery() throws {
    let harness = try Harness(.file)
    let sink = try harness.storage.snapshots.beginWrite(snapshotMetadata(10, term: 1))
    try sink.write(Self.data(100))
    // The process dies here: no commit, no abort. Simulate by leaving the temporary file behind.
    let temporary = Disk.list(harness.directory.file("snapshots"))
    #expect(temporary.count == 1 && temporary[0].contains(".tmp"))
    let copy = TemporaryDirectory()
    Disk.copyDirectory(harness.directory.data, to: copy.data)
    sink.abort()
    let (storage, recovered) = try reopen(copy.data)
    defer { storage.close() }
    #expect(recovered.snapshot == nil)
    #expect(recovered.warnings.contains { $0.contains("unfinished snapshot") })
    #expect(Disk.list(copy.file("snapshots")).isEmpty)
  }

  @Test(arguments: StorageKind.allCases, [1, 2, 3])
  func retentionKeepsTheNewest(kind: StorageKind, retained: Int) throws {
    var options = FileStorageOptions()
    options.snapshotsRetained = retained
    let harness = try Harness(kind, options: options)
    for index in [UInt64(10), 20, 30, 40] { try harness.saveSnapshot(snapshotMetadata(index, term: 1)) }
    #expect(harness.storage.snapshots.newest == snapshotMetadata(40, term: 1))
    let kept = [UInt64(10), 20, 30, 40].suffix(retained)
    if kind == .file {
      let names = Disk.list(harness.directory.file("snapshots"))
      #expect(names == kept.map { "\(DataLayout.padded($0))-\(DataLayout.padded(1)).snap" })
    } else {
      #expect(harness.storage.snapshots as? MemorySnapshotStore != nil)
      #expect((harness.storage as! MemoryStorage).snapshotStore.retained.map(\.index) == Array(kept))
    }
    for index in [UInt64(10), 20, 30, 40] {
      let error = storageError { () throws(StorageError) in
        try harness.storage.snapshots.open(snapshotMetadata(index, term: 1))
      }
      #expect((error == nil) == kept.contains(index), "snapshot \(index)")
    }
  }

  @Test func openDetectsDamageBeforeTheLastChunk() throws {
    let harness = try Harness(.file)
    let metadata = snapshotMetadata(10, term: 1)
    try harness.saveSnapshot(metadata, data: Self.data(10_000))
    let path = DataLayout(root: harness.directory.data).snapshot(index: 10, term: 1)
    Disk.flipBit(path, at: 5000, bit: 3)
    let source = try harness.storage.snapshots.open(metadata)
    var chunks = 0
    let error = storageError { () throws(StorageError) in
      while try source.read(maxBytes: 4096) != nil { chunks += 1 }
    }
    #expect(chunks == 2, "the third (last) chunk must not be handed out")
    #expect(error?.corruptionLocation?.file == path)
  }

  @Test func receivedSnapshotResetsTheLog() throws {
    for kind in StorageKind.allCases {
      let harness = try Harness(kind, options: smallSegments)
      try harness.append(Entries.run(1...80, term: 1, size: 150))
      try harness.storage.sync()
      let received = snapshotMetadata(500, term: 3)
      try harness.saveSnapshot(received)
      try harness.storage.write(PersistBatch(snapshot: received, hardState: HardState(term: 3, commit: 500)))
      #expect(try harness.storage.sync() == received.position)
      if kind == .file {
        #expect(Disk.list(harness.directory.file("wal")) == ["\(DataLayout.padded(501)).wal"])
      }
      var recovered = try harness.restart()
      #expect(recovered.snapshot == received)
      #expect(recovered.stored.entries.isEmpty)
      #expect(recovered.stored.hardState == HardState(term: 3, commit: 500))
      #expect(recovered.warnings.isEmpty)
      try harness.append(Entries.run(501...510, term: 3))
      try harness.storage.sync()
      recovered = try harness.restart()
      expectLog(recovered.stored.entries, Entries.run(501...510, term: 3))
    }
  }

  @Test(arguments: StorageKind.allCases)
  func snapshotAndEntriesInOneBatch(kind: StorageKind) throws {
    let harness = try Harness(kind)
    try harness.append(Entries.run(1...10, term: 1))
    let received = snapshotMetadata(20, term: 2)
    try harness.saveSnapshot(received)
    try harness.storage.write(PersistBatch(snapshot: received, entries: Entries.run(21...25, term: 2)))
    #expect(try harness.storage.sync() == LogPosition(index: 25, term: 2))
    let recovered = try harness.restart()
    #expect(recovered.stored.snapshot == received)
    expectLog(recovered.stored.entries, Entries.run(21...25, term: 2))
  }
}
