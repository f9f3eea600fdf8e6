import Raft

/// Rebuilds a snapshot from its stream, fed in chunks of any size. Decoding can run off the state
/// machine's thread; `KVStateMachine.restore(_:)` then installs the result in O(1).
public struct KVSnapshotDecoder {
  private struct Header {
    var format: UInt8
    var appliedIndex: UInt64
    var revision: Int64
    var compactRevision: Int64
    /// Formats 1 and 2: live keys; format 3: indexed keys.
    var keyCount: UInt64
    var leaseCount: UInt64 = 0
    /// Formats 1 and 2: bytes of the live entries; format 3: the store's held bytes.
    var dataBytes: UInt64
    var clockMillis: UInt64
    var idempotencyCount: UInt64
    var clusterVersion = ClusterVersion.initial
  }

  private enum Phase: Int, Comparable {
    case header, entries, leases, idempotency, ended
    static func < (left: Phase, right: Phase) -> Bool { left.rawValue < right.rawValue }
  }

  /// Bytes of an incomplete frame carried over to the next chunk.
  private var pending: [UInt8] = []
  private var phase = Phase.header
  private var header: Header?
  private var builder: MVCCStore.Builder?
  private var decodedKeys: UInt64 = 0
  private var decodedLeases: UInt64 = 0
  private var dataBytes: UInt64 = 0
  private var idempotency = IdempotencyTable()

  public init() {}

  /// The format of the stream, once its header has been fed (0 before).
  public var formatVersion: UInt8 { header?.format ?? 0 }

  public mutating func feed(_ chunk: [UInt8]) throws(KVDecodingError) {
    if pending.isEmpty {
      // The usual case: chunks hold whole frames, so they are decoded where they lie.
      let consumed = try decodeFrames(in: chunk)
      if consumed < chunk.count { pending = Array(chunk[consumed...]) }
    } else {
      pending.append(contentsOf: chunk)
      let buffer = pending
      pending = []
      let consumed = try decodeFrames(in: buffer)
      if consumed < buffer.count { pending = Array(buffer[consumed...]) }
    }
  }

  /// The decoded snapshot; throws unless the stream was complete and consistent.
  public func finish() throws(KVDecodingError) -> KVSnapshot {
    guard phase == .ended, pending.isEmpty, let header, let builder else { throw .truncated }
    let store = try builder.finish()
    let heldBytes = header.format >= 3 ? UInt64(store.heldBytes) : dataBytes
    guard header.keyCount == decodedKeys, header.leaseCount == decodedLeases, header.dataBytes == heldBytes,
      header.idempotencyCount == UInt64(idempotency.count)
    else { throw .invalidSnapshot("counts do not match the header") }
    return KVSnapshot(
      appliedIndex: header.appliedIndex, store: store, idempotency: idempotency,
      clusterVersion: header.clusterVersion)
  }

  /// Decodes the complete frames at the start of `buffer`; returns how many bytes they took.
  private mutating func decodeFrames(in buffer: [UInt8]) throws(KVDecodingError) -> Int {
    var offset = 0
    while buffer.count - offset >= SnapshotFormat.frameHeaderBytes {
      guard phase != .ended else { throw .trailingBytes(buffer.count - offset) }
      let (kind, length, checksum) = buffer.withUnsafeBytes { bytes in
        (
          bytes[offset],
          Int(UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 1, as: UInt32.self))),
          UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 5, as: UInt64.self))
        )
      }
      let payloadStart = offset + SnapshotFormat.frameHeaderBytes
      guard buffer.count - payloadStart >= length else { break }
      let payload = payloadStart..<payloadStart + length
      let intact = buffer.withUnsafeBytes { bytes in
        frameChecksum(UnsafeRawBufferPointer(rebasing: bytes[payload]), seed: UInt64(kind)) == checksum
      }
      guard intact else { throw .checksumMismatch }
      try decodeFrame(kind: kind, payload: payload, in: buffer)
      offset = payload.upperBound
    }
    if phase == .ended && offset < buffer.count { throw .trailingBytes(buffer.count - offset) }
    return offset
  }

  private mutating func decodeFrame(
    kind: UInt8, payload: Range<Int>, in buffer: [UInt8]
  ) throws(KVDecodingError) {
    let next: Phase
    let modern = (header?.format ?? 0) >= 3
    switch kind {
    case SnapshotFormat.kindHeader: next = .header
    case SnapshotFormat.kindEntries where !modern: next = .entries
    case SnapshotFormat.kindHistory where modern: next = .entries
    case SnapshotFormat.kindLeases where modern: next = .leases
    case SnapshotFormat.kindIdempotency: next = .idempotency
    case SnapshotFormat.kindEnd: next = .ended
    default: throw .unknownTag(kind)
    }
    // Frames must come in phase order, and the header exactly once, first.
    guard (header == nil) == (next == .header), next >= phase else {
      throw .invalidSnapshot("frame of kind \(kind) out of order")
    }
    phase = next
    switch next {
    case .header: try decodeHeader(ByteReader(buffer, offset: payload.lowerBound, end: payload.upperBound))
    case .entries, .leases:
      try buffer.withUnsafeBytes { bytes in
        Result { () throws(KVDecodingError) in
          let payload = UnsafeRawBufferPointer(rebasing: bytes[payload])
          switch (next, modern) {
          case (.leases, _): try decodeLeases(payload)
          case (_, true): try decodeHistories(payload)
          default: try decodeEntries(payload)
          }
        }
      }.get()
    case .idempotency:
      try decodeIdempotency(ByteReader(buffer, offset: payload.lowerBound, end: payload.upperBound))
    case .ended:
      guard payload.isEmpty else { throw .invalidSnapshot("end frame with a payload") }
    }
  }

  private mutating func decodeHeader(_ reader: ByteReader) throws(KVDecodingError) {
    var reader = reader
    let header = try mapFailure { () throws(ByteReader.Failure) -> Header? in
      guard try reader.readUInt32() == SnapshotFormat.magic else { return nil }
      let format = try reader.readUInt8()
      guard (1...SnapshotFormat.version).contains(format) else {
        return Header(
          format: format, appliedIndex: 0, revision: 0, compactRevision: 0, keyCount: 0, dataBytes: 0,
          clockMillis: 0, idempotencyCount: 0)
      }
      let appliedIndex = try reader.readUInt64()
      let revision = try reader.readUInt64()
      var header = Header(
        format: format, appliedIndex: appliedIndex, revision: Int64(truncatingIfNeeded: revision),
        compactRevision: Int64(truncatingIfNeeded: revision), keyCount: 0, dataBytes: 0, clockMillis: 0,
        idempotencyCount: 0)
      guard revision <= UInt64(Int64.max) else { throw .invalidValue("revision \(revision)") }
      if format >= 3 {
        let compacted = try reader.readUInt64()
        guard compacted <= revision else {
          throw .invalidValue("compacted revision \(compacted) above \(revision)")
        }
        header.compactRevision = Int64(compacted)
        header.keyCount = try reader.readUInt64()
        header.leaseCount = try reader.readUInt64()
      } else {
        header.keyCount = try reader.readUInt64()
      }
      header.dataBytes = try reader.readUInt64()
      header.clockMillis = try reader.readUInt64()
      header.idempotencyCount = try reader.readUInt64()
      if format >= 2 { header.clusterVersion = try reader.readUInt32() }
      return header
    }
    guard let header else { throw .invalidSnapshot("not a key-value snapshot") }
    guard (1...SnapshotFormat.version).contains(header.format) else {
      throw .unsupportedVersion(header.format)
    }
    guard SnapshotFormat.version(forClusterVersion: header.clusterVersion) == header.format else {
      throw .invalidSnapshot("a format \(header.format) snapshot of cluster version \(header.clusterVersion)")
    }
    guard reader.isAtEnd else { throw .trailingBytes(reader.remaining) }
    self.header = header
    builder = try MVCCStore.Builder(revision: header.revision, compactRevision: header.compactRevision)
    idempotency.setClock(header.clockMillis)
  }

  private mutating func decodeEntries(_ bytes: UnsafeRawBufferPointer) throws(KVDecodingError) {
    let revision = UInt64(header!.revision)
    var cursor = WireCursor(bytes)
    while cursor.remaining > 0 {
      let keyCount = try cursor.readVarint()
      let valueCount = try cursor.readVarint()
      let createRevision = try cursor.readVarint()
      let modRevision = try cursor.readVarint()
      let version = try cursor.readVarint()
      guard keyCount > 0, keyCount <= UInt64(cursor.remaining),
        valueCount <= UInt64(cursor.remaining) - keyCount
      else { throw keyCount == 0 ? .invalidSnapshot("empty key") : .truncated }
      // Each modification since creation took its own revision.
      guard createRevision >= 1, createRevision <= modRevision, modRevision <= revision, version >= 1,
        version - 1 <= modRevision - createRevision
      else { throw .invalidSnapshot("inconsistent revisions") }
      let keyStart = cursor.offset
      let key = UnsafeRawBufferPointer(rebasing: bytes[keyStart..<keyStart + Int(keyCount)])
      let value = UnsafeRawBufferPointer(
        rebasing: bytes[keyStart + Int(keyCount)..<keyStart + Int(keyCount) + Int(valueCount)])
      guard isValidUTF8(key), isValidUTF8(value) else { throw .invalidUTF8 }
      cursor = WireCursor(bytes, offset: keyStart + Int(keyCount) + Int(valueCount))
      try builder!.addLatest(
        key: Array(key), value: Array(value), createRevision: Int64(createRevision),
        modRevision: Int64(modRevision), version: Int64(version))
      decodedKeys += 1
      dataBytes += UInt64(key.count + value.count)
    }
  }

  /// Format 3's keys with their histories.
  private mutating func decodeHistories(_ bytes: UnsafeRawBufferPointer) throws(KVDecodingError) {
    var cursor = WireCursor(bytes)
    func nonNegative(_ value: UInt64) throws(KVDecodingError) -> Int64 {
      guard let value = Int64(exactly: value) else { throw .invalidSnapshot("revision out of range") }
      return value
    }
    while cursor.remaining > 0 {
      let key = try cursor.readBytes()
      // A change takes at least 6 bytes.
      let count = try cursor.readCount(minimumBytes: 6)
      var changes: [MVCCStore.ChangeRecord] = []
      changes.reserveCapacity(count)
      for _ in 0..<count {
        let main = try nonNegative(try cursor.readVarint())
        let sub = try nonNegative(try cursor.readVarint())
        let value: [UInt8]?
        switch try cursor.readByte() {
        case 0: value = nil
        case 1: value = try cursor.readBytes()
        case let other: throw .unknownTag(other)
        }
        let createRevision = try nonNegative(try cursor.readVarint())
        let version = try nonNegative(try cursor.readVarint())
        changes.append(
          MVCCStore.ChangeRecord(
            revision: Revision(main: main, sub: sub), value: value, createRevision: createRevision,
            version: version, lease: try cursor.readSigned()))
      }
      try builder!.addHistory(key: key, changes: changes)
      decodedKeys += 1
    }
  }

  private mutating func decodeLeases(_ bytes: UnsafeRawBufferPointer) throws(KVDecodingError) {
    var cursor = WireCursor(bytes)
    while cursor.remaining > 0 {
      let id = try cursor.readSigned()
      let granted = try cursor.readSigned()
      try builder!.addLease(
        MVCCStore.LeaseSnapshotRecord(id: id, grantedTTL: granted, checkpointedTTL: try cursor.readSigned()))
      decodedLeases += 1
    }
  }

  private mutating func decodeIdempotency(_ reader: ByteReader) throws(KVDecodingError) {
    var reader = reader
    let clock = header!.clockMillis
    var lastRecorded: UInt64 = 0
    idempotency.forEachInOrder { _, record in lastRecorded = record.recordedAtMillis }
    while !reader.isAtEnd {
      let (key, proposedAt, recordedAt) = try mapFailure {
        () throws(ByteReader.Failure) -> (String, UInt64, UInt64) in
        (try readString(&reader), try reader.readUInt64(), try reader.readUInt64())
      }
      let result = try readResult(&reader)
      let keyIsValid = key.utf8.withContiguousStorageIfAvailable {
        isValidIdempotencyKey(UnsafeRawBufferPointer($0), maxBytes: SnapshotFormat.maxStringBytes)
      }
      guard keyIsValid == true, idempotency.lookup(key) == nil else {
        throw .invalidSnapshot("invalid or repeated idempotency key")
      }
      guard proposedAt <= recordedAt, recordedAt >= lastRecorded, recordedAt <= clock else {
        throw .invalidSnapshot("idempotency records out of order")
      }
      lastRecorded = recordedAt
      idempotency.insert(
        key: key, result: result, proposedAtMillis: proposedAt, recordedAtMillis: recordedAt)
    }
  }
}
