import Raft

/// The on-disk layout of WAL segments and records (all integers big-endian).
///
/// Segment header, 20 bytes: magic "RDBW" (4), version (2), reserved (2), first index (8),
/// CRC32C of the preceding 16 bytes (4).
///
/// Record: payload length (4), CRC32C of the payload (4), CRC32C of those 8 header bytes (4), then the
/// payload: entry kind (1), index (8), term (8), data. The header has its own checksum so that a
/// damaged length is recognized as such before it is used to find the next record; the payload
/// checksum then tells a complete record from a torn one.
enum WALFormat {
  static let segmentMagic: UInt32 = 0x5244_4257
  static let segmentVersion: UInt16 = 1
  static let segmentHeaderSize = 20
  static let recordHeaderSize = 12
  static let payloadPrefixSize = 17

  @inline(__always) static func recordSize(dataCount: Int) -> Int {
    recordHeaderSize + payloadPrefixSize + dataCount
  }

  static func segmentHeader(firstIndex: UInt64) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: segmentHeaderSize)
    bytes.withUnsafeMutableBytes { header in
      header.storeBigEndian(segmentMagic, at: 0)
      header.storeBigEndian(segmentVersion, at: 4)
      header.storeBigEndian(UInt16(0), at: 6)
      header.storeBigEndian(firstIndex, at: 8)
      header.storeBigEndian(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: header[0..<16])), at: 16)
    }
    return bytes
  }

  enum HeaderCheck {
    case valid(firstIndex: UInt64)
    /// Shorter than a header, or nothing but zeros: a segment whose creation a crash interrupted.
    case incomplete
    case invalid(String)
  }

  static func checkSegmentHeader(_ bytes: UnsafeRawBufferPointer, path: String) throws(StorageError)
    -> HeaderCheck
  {
    guard bytes.count >= segmentHeaderSize else { return .incomplete }
    if bytes.isAllZero(from: 0) { return .incomplete }
    guard bytes.loadBigEndian(at: 0, as: UInt32.self) == segmentMagic else {
      return .invalid("bad segment magic")
    }
    let stored = bytes.loadBigEndian(at: 16, as: UInt32.self)
    guard CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[0..<16])) == stored else {
      return .invalid("segment header checksum mismatch")
    }
    let version = bytes.loadBigEndian(at: 4, as: UInt16.self)
    guard version == segmentVersion else {
      throw .unsupportedFormat(
        path: path, found: "WAL segment version \(version)", supported: DataFormat.version)
    }
    return .valid(firstIndex: bytes.loadBigEndian(at: 8, as: UInt64.self))
  }

  /// Encodes `entries` back to back into `buffer` (which must have room for them), appending each
  /// record's offset (relative to the buffer start, plus `base`) to `offsets`.
  static func encode(_ entries: [LogEntry], into buffer: WriteBuffer, base: Int64, offsets: inout [Int64]) {
    var position = buffer.count
    let start = buffer.pointer
    for entry in entries {
      offsets.append(base + Int64(position))
      let payloadLength = payloadPrefixSize + entry.data.count
      let payload = start + position + recordHeaderSize
      payload.storeBytes(of: entry.kind.rawValue, as: UInt8.self)
      payload.storeBytes(of: entry.index.bigEndian, toByteOffset: 1, as: UInt64.self)
      payload.storeBytes(of: entry.term.bigEndian, toByteOffset: 9, as: UInt64.self)
      entry.data.withUnsafeBytes { data in
        if let source = data.baseAddress {
          (payload + payloadPrefixSize).copyMemory(from: source, byteCount: data.count)
        }
      }
      let payloadCRC = CRC32C.checksum(UnsafeRawBufferPointer(start: payload, count: payloadLength))
      let header = start + position
      header.storeBytes(of: UInt32(payloadLength).bigEndian, as: UInt32.self)
      header.storeBytes(of: payloadCRC.bigEndian, toByteOffset: 4, as: UInt32.self)
      let headerCRC = CRC32C.checksum(UnsafeRawBufferPointer(start: header, count: 8))
      header.storeBytes(of: headerCRC.bigEndian, toByteOffset: 8, as: UInt32.self)
      position += recordHeaderSize + payloadLength
    }
    buffer.count = position
  }
}
