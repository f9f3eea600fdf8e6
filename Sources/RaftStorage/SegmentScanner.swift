import Raft

/// What reading one segment at recovery found.
struct SegmentScan {
  var firstIndex: UInt64
  /// Offset of every complete record, in index order.
  var offsets: [Int64] = []
  /// Entries above the index recovery keeps from (entries at or below it are checked, not kept).
  var entries: [LogEntry] = []
  var lastTerm: UInt64?
  /// The term of the entry at the recovered snapshot's index, when this segment holds it.
  var termAtSnapshot: UInt64?
  /// Where the valid records end.
  var end: Int64
  /// Set when the final segment ends in a torn record: its offset and what was wrong with it.
  var torn: (offset: Int64, reason: String)?

  var lastIndex: UInt64 { firstIndex + UInt64(offsets.count) - 1 }
}

/// Checks a segment's records against the recovery rules (docs/STORAGE.md):
///
/// - A record that fails its checks at the end of the *final* segment, with nothing but zeros after
///   it (a preallocated tail) or the file ending inside it, is a torn write: a crash interrupted it
///   before it was ever synced. It is reported so that recovery can cut it off.
/// - Anything else that fails — in the middle of the final segment or anywhere in an earlier one
///   (earlier segments were synced whole before the next one was created) — is corruption, reported
///   with the file and byte offset, because dropping it could drop acknowledged entries.
/// - Valid records must continue the log: consecutive indexes, terms that never decrease.
enum SegmentScanner {
  static func scan(
    _ bytes: UnsafeRawBufferPointer, path: String, firstIndex: UInt64, isFinal: Bool,
    previousTerm: UInt64?, keepAbove: UInt64, maxRecordBytes: Int
  ) throws(StorageError) -> SegmentScan {
    var scan = SegmentScan(firstIndex: firstIndex, end: Int64(WALFormat.segmentHeaderSize))
    var offset = WALFormat.segmentHeaderSize
    var expectedIndex = firstIndex
    var lastTerm = previousTerm
    let size = bytes.count

    func damaged(_ reason: String, recordEnd: Int) throws(StorageError) {
      if isFinal && (recordEnd >= size || bytes.isAllZero(from: recordEnd)) {
        scan.torn = (Int64(offset), reason)
        return
      }
      let context = isFinal ? "followed by more data" : "in a segment that is not the last"
      throw .corruption(file: path, offset: Int64(offset), reason: "\(reason), \(context)")
    }

    while offset < size {
      let remaining = size - offset
      if remaining < WALFormat.recordHeaderSize {
        if bytes.isAllZero(from: offset) && isFinal { break }
        try damaged("file ends inside a record header", recordEnd: size)
        break
      }
      let length = Int(bytes.loadBigEndian(at: offset, as: UInt32.self))
      let payloadCRC = bytes.loadBigEndian(at: offset + 4, as: UInt32.self)
      let headerCRC = bytes.loadBigEndian(at: offset + 8, as: UInt32.self)
      guard CRC32C.checksum(UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + 8])) == headerCRC else {
        let headerEnd = offset + WALFormat.recordHeaderSize
        // Zeros where a header should be are the unwritten (preallocated) rest of the final segment.
        if isFinal && bytes.isAllZero(from: offset) { break }
        try damaged("record header checksum mismatch", recordEnd: headerEnd)
        break
      }
      guard length >= WALFormat.payloadPrefixSize, length <= maxRecordBytes else {
        throw .corruption(
          file: path, offset: Int64(offset),
          reason:
            "record length \(length) outside \(WALFormat.payloadPrefixSize)...\(maxRecordBytes) (maxRecordBytes)"
        )
      }
      let payloadStart = offset + WALFormat.recordHeaderSize
      let recordEnd = payloadStart + length
      guard recordEnd <= size else {
        try damaged("file ends inside a record (\(length)-byte payload)", recordEnd: size)
        break
      }
      let payload = UnsafeRawBufferPointer(rebasing: bytes[payloadStart..<recordEnd])
      guard CRC32C.checksum(payload) == payloadCRC else {
        try damaged("record payload checksum mismatch", recordEnd: recordEnd)
        break
      }
      guard let kind = LogEntry.Kind(rawValue: payload[0]) else {
        throw .corruption(file: path, offset: Int64(offset), reason: "unknown entry kind \(payload[0])")
      }
      let index = payload.loadBigEndian(at: 1, as: UInt64.self)
      let term = payload.loadBigEndian(at: 9, as: UInt64.self)
      guard index == expectedIndex else {
        throw .corruption(
          file: path, offset: Int64(offset), reason: "expected entry \(expectedIndex), found \(index)")
      }
      if let lastTerm, term < lastTerm {
        throw .corruption(
          file: path, offset: Int64(offset),
          reason: "term decreases from \(lastTerm) to \(term) at entry \(index)")
      }
      scan.offsets.append(Int64(offset))
      if index == keepAbove { scan.termAtSnapshot = term }
      if index > keepAbove {
        let data = Array(UnsafeRawBufferPointer(rebasing: payload[WALFormat.payloadPrefixSize...]))
        scan.entries.append(LogEntry(index: index, term: term, kind: kind, data: data))
      }
      lastTerm = term
      scan.lastTerm = term
      expectedIndex += 1
      offset = recordEnd
      scan.end = Int64(offset)
    }
    if !isFinal && scan.torn == nil && offset != size {
      throw .corruption(file: path, offset: Int64(offset), reason: "unexpected bytes after the last record")
    }
    return scan
  }
}
