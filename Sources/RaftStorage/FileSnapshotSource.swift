import Raft

/// Streams a snapshot's data, checking the file checksum before the last chunk is handed out.
/// It reads only its own open file, so it may be used on any one thread (sending a snapshot to a
/// follower while the owner keeps writing); an open source keeps the file readable even if
/// retention deletes it meanwhile.
final class FileSnapshotSource: SnapshotSource {
  let metadata: SnapshotMetadata
  let dataSize: Int64
  private let file: any StorageFile
  private var position: Int64
  private let dataEnd: Int64
  private var checksum: UInt32
  private var verified = false

  init(file: any StorageFile, header: SnapshotFileFormat.Header) {
    self.file = file
    metadata = header.metadata
    dataSize = header.dataLength
    position = Int64(header.size)
    dataEnd = position + header.dataLength
    checksum = header.checksum
  }

  func read(maxBytes: Int) throws(StorageError) -> [UInt8]? {
    precondition(maxBytes > 0)
    if position == dataEnd {
      try verifyOnce()
      return nil
    }
    let count = Int(min(Int64(maxBytes), dataEnd - position))
    let chunk = try file.read(count: count, at: position)
    guard chunk.count == count else {
      throw .corruption(
        file: file.path, offset: position + Int64(chunk.count), reason: "snapshot data ends early")
    }
    checksum = chunk.withUnsafeBytes { CRC32C.update(checksum, $0) }
    position += Int64(count)
    // Verify before handing out the last chunk, so a reader that stops after `dataSize` bytes has
    // still had the whole file checked.
    if position == dataEnd { try verifyOnce() }
    return chunk
  }

  private func verifyOnce() throws(StorageError) {
    guard !verified else { return }
    try SnapshotFileFormat.checkTrailer(file, at: dataEnd, checksum: checksum)
    verified = true
  }

  func close() { file.close() }
}
