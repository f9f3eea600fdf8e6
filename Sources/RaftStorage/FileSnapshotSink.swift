import Raft

/// Writes one snapshot to a temporary file; `commit` makes it durable and visible.
///
/// `write` touches only this sink's own file, so a large snapshot can be streamed on another thread
/// than the storage's owner; `commit` and `abort` update the store and belong to the owner (or its
/// lock), like every other storage call.
final class FileSnapshotSink: SnapshotSink {
  private let store: FileSnapshotStore
  private let metadata: SnapshotMetadata
  private let file: any StorageFile
  private let temporaryPath: String
  private let finalPath: String
  private var offset: Int64
  private var dataChecksum: UInt32 = 0
  private var dataLength: Int64 = 0
  private var finished = false

  init(
    store: FileSnapshotStore, metadata: SnapshotMetadata, file: any StorageFile, temporaryPath: String,
    finalPath: String, dataOffset: Int64
  ) {
    self.store = store
    self.metadata = metadata
    self.file = file
    self.temporaryPath = temporaryPath
    self.finalPath = finalPath
    offset = dataOffset
  }

  deinit { if !finished { abort() } }

  /// A failed data write surfaces but does not fail the store: the file is temporary and the caller
  /// aborts it; nothing durable is in doubt.
  func write(_ chunk: [UInt8]) throws(StorageError) {
    guard !finished else { throw .misuse("write to a snapshot sink after commit or abort") }
    try file.writeAll(chunk, at: offset)
    dataChecksum = chunk.withUnsafeBytes { CRC32C.update(dataChecksum, $0) }
    offset += Int64(chunk.count)
    dataLength += Int64(chunk.count)
  }

  func commit() throws(StorageError) {
    guard !finished else { throw .misuse("snapshot sink committed after commit or abort") }
    let header = SnapshotFileFormat.header(metadata, dataLength: UInt64(dataLength))
    let checksum = CRC32C.combine(CRC32C.checksum(header), dataChecksum, lengthB: dataLength)
    try file.writeAll(header, at: 0)
    try file.writeAll(SnapshotFileFormat.trailer(checksum: checksum), at: offset)
    // From the fsync on, a failure leaves the file's durability unknown: fail the store.
    try store.guarding { () throws(StorageError) in
      try file.sync()
      file.close()
      try store.rename(temporaryPath, to: finalPath)
      finished = true
      try store.didCommit(metadata)
    }
  }

  func abort() {
    guard !finished else { return }
    finished = true
    file.close()
    store.removeTemporary(temporaryPath)
  }
}
