import HashTreeCollections
import Raft

// Snapshot stream, format version 1 or 2: a sequence of frames
//
//   kind: u8, payload length: u32 (big-endian), checksum of payload: u64 (big-endian), payload
//
// in the order: one header frame, entry frames, idempotency frames, one end frame. Each frame carries
// its own checksum so a corrupt byte is caught where it is, and frames are cut at about `chunkBytes`
// so that neither side ever holds more than a chunk plus one record. Frame boundaries need not match
// the chunks a transport delivers; the decoder reassembles.
//
//   header:       magic "RKVS" u32, format version u8, appliedIndex u64, revision u64,
//                 entry count u64, dataBytes u64, idempotency clock u64, idempotency record count u64,
//                 and in version 2 the cluster version u32. A snapshot is written in version 1 while
//                 the cluster version is 1, so that every member (an older build among them) reads it.
//   entries:      per key, varints: key length, value length, createRevision, modRevision, version;
//                 then key bytes, value bytes. In hash order: replicas' streams differ, states do not.
//   idempotency:  per record, oldest first: key (u32 length + bytes), proposedAtMillis u64,
//                 recordedAtMillis u64, result (see `writeResult`)
//   end:          empty; its presence proves the stream is complete.

enum SnapshotFormat {
  static let magic: UInt32 = 0x524B_5653  // "RKVS"
  /// Version 2 added the cluster version to the header.
  static let version: UInt8 = 2
  static let frameHeaderBytes = 13
  static let kindHeader: UInt8 = 1
  static let kindEntries: UInt8 = 2
  static let kindIdempotency: UInt8 = 3
  static let kindEnd: UInt8 = 4
  /// Idempotency keys are bounded by the sender's limits, which ought to match ours; this only stops
  /// a corrupt length from being believed.
  static let maxStringBytes = 1 << 30
}

/// A frozen point-in-time copy of the state machine. Taking it is O(1); it is immutable and
/// `Sendable`, so it can be serialized on another thread while the state machine keeps applying.
public struct KVSnapshot: Sendable {
  public let appliedIndex: UInt64
  public let revision: UInt64
  public let dataBytes: Int
  /// The cluster version the log had agreed at `appliedIndex`.
  public let clusterVersion: UInt32
  let entries: TreeSet<Entry>
  let idempotency: IdempotencyTable

  init(
    appliedIndex: UInt64, revision: UInt64, dataBytes: Int, entries: TreeSet<Entry>,
    idempotency: IdempotencyTable, clusterVersion: UInt32
  ) {
    self.appliedIndex = appliedIndex
    self.revision = revision
    self.dataBytes = dataBytes
    self.entries = entries
    self.idempotency = idempotency
    self.clusterVersion = clusterVersion
  }

  public var count: Int { entries.count }

  /// The record of `key` in this snapshot. Safe from any thread (the snapshot is immutable); costs
  /// one allocation for the search probe.
  public func get(_ key: String) -> KVRecord? {
    var probe = KeyProbe(capacity: key.utf8.count)
    return record(of: key, in: entries, probe: &probe)
  }

  /// Serializes in chunks of about `chunkBytes` (more when a single record is larger), calling
  /// `write` for each: streaming, so the whole snapshot is never in memory at once.
  public func serialize(chunkBytes: Int, write: ([UInt8]) throws -> Void) rethrows {
    var chunks = self.chunks(chunkBytes: chunkBytes)
    while let chunk = chunks.next() { try write(chunk) }
  }

  /// The same stream pulled one chunk at a time, for a sender that paces itself (e.g. waits for a
  /// follower's acknowledgement before producing the next chunk).
  public func chunks(chunkBytes: Int) -> Chunks { Chunks(snapshot: self, chunkBytes: chunkBytes) }

  public struct Chunks: Sequence, IteratorProtocol {
    private enum Phase { case header, entries, idempotency, end, done }

    private let snapshot: KVSnapshot
    private let chunkBytes: Int
    private var phase = Phase.header
    private var entryIterator: TreeSet<Entry>.Iterator
    private var idempotencyIterator: IdempotencyTable.OrderedIterator

    init(snapshot: KVSnapshot, chunkBytes: Int) {
      self.snapshot = snapshot
      self.chunkBytes = Swift.max(chunkBytes, 64)
      entryIterator = snapshot.entries.makeIterator()
      idempotencyIterator = snapshot.idempotency.makeOrderedIterator()
    }

    public mutating func next() -> [UInt8]? {
      guard phase != .done else { return nil }
      var chunk: [UInt8] = []
      // Room for the records that straddle the target, without trusting a huge target.
      chunk.reserveCapacity(Swift.min(chunkBytes, 1 << 26) + 4096)
      while chunk.count < chunkBytes && phase != .done {
        switch phase {
        case .header:
          appendFrame(kind: SnapshotFormat.kindHeader, payload: headerPayload(), to: &chunk)
          phase = .entries
        case .entries:
          if !appendEntriesFrame(to: &chunk) { phase = .idempotency }
        case .idempotency:
          if !appendIdempotencyFrame(to: &chunk) { phase = .end }
        case .end:
          appendFrame(kind: SnapshotFormat.kindEnd, payload: [], to: &chunk)
          phase = .done
        case .done:
          break
        }
      }
      return chunk
    }

    private func headerPayload() -> [UInt8] {
      var writer = ByteWriter(capacity: 64)
      let version: UInt8 = snapshot.clusterVersion > ClusterVersion.initial ? SnapshotFormat.version : 1
      writer.write(SnapshotFormat.magic)
      writer.write(version)
      writer.write(snapshot.appliedIndex)
      writer.write(snapshot.revision)
      writer.write(UInt64(snapshot.entries.count))
      writer.write(UInt64(snapshot.dataBytes))
      writer.write(snapshot.idempotency.clockMillis)
      writer.write(UInt64(snapshot.idempotency.count))
      if version >= 2 { writer.write(snapshot.clusterVersion) }
      return writer.bytes
    }

    /// Appends one frame of key records, filling the chunk. Returns false once the keys run out.
    private mutating func appendEntriesFrame(to chunk: inout [UInt8]) -> Bool {
      let start = chunk.count
      chunk.append(contentsOf: repeatElement(0, count: SnapshotFormat.frameHeaderBytes))
      var more = true
      while chunk.count < chunkBytes {
        guard let entry = entryIterator.next() else {
          more = false
          break
        }
        chunk.appendVarint(UInt64(entry.keyCount))
        chunk.appendVarint(UInt64(entry.valueCount))
        chunk.appendVarint(entry.createRevision)
        chunk.appendVarint(entry.modRevision)
        chunk.appendVarint(entry.version)
        entry.withKey { chunk.append(contentsOf: $0) }
        entry.withValue { chunk.append(contentsOf: $0) }
      }
      if chunk.count == start + SnapshotFormat.frameHeaderBytes {
        chunk.removeLast(SnapshotFormat.frameHeaderBytes)
      } else {
        sealFrame(kind: SnapshotFormat.kindEntries, at: start, in: &chunk)
      }
      return more
    }

    /// Appends one frame of idempotency records. Returns false once they run out.
    private mutating func appendIdempotencyFrame(to chunk: inout [UInt8]) -> Bool {
      var writer = ByteWriter(capacity: 1024)
      var more = true
      while chunk.count + writer.bytes.count < chunkBytes {
        guard let (key, record) = idempotencyIterator.next() else {
          more = false
          break
        }
        writer.writeLengthPrefixed(Array(key.utf8))
        writer.write(record.proposedAtMillis)
        writer.write(record.recordedAtMillis)
        writeResult(record.result, to: &writer)
      }
      if !writer.bytes.isEmpty {
        appendFrame(kind: SnapshotFormat.kindIdempotency, payload: writer.bytes, to: &chunk)
      }
      return more
    }
  }
}

private func appendFrame(kind: UInt8, payload: [UInt8], to chunk: inout [UInt8]) {
  let start = chunk.count
  chunk.append(contentsOf: repeatElement(0, count: SnapshotFormat.frameHeaderBytes))
  chunk.append(contentsOf: payload)
  sealFrame(kind: kind, at: start, in: &chunk)
}

/// Fills in the header of the frame that starts at `start` and runs to the end of `chunk`.
private func sealFrame(kind: UInt8, at start: Int, in chunk: inout [UInt8]) {
  let payloadStart = start + SnapshotFormat.frameHeaderBytes
  let length = chunk.count - payloadStart
  precondition(length <= Int(UInt32.max), "snapshot frame too large")
  chunk.withUnsafeMutableBytes { bytes in
    let checksum = frameChecksum(UnsafeRawBufferPointer(rebasing: bytes[payloadStart...]), seed: UInt64(kind))
    bytes[start] = kind
    bytes.storeBytes(of: UInt32(length).bigEndian, toByteOffset: start + 1, as: UInt32.self)
    bytes.storeBytes(of: checksum.bigEndian, toByteOffset: start + 5, as: UInt64.self)
  }
}

// Result encoding: tag u8 (1 put, 2 delete, 3 compare-and-set, 4 rejected, 5 cluster version), then
//   put: revision u64 | delete: existed bool, revision u64 |
//   compare-and-set: succeeded bool, has-current bool, [current: u32 length + bytes], revision u64 |
//   rejected: reason (u32 length + bytes)
private func writeResult(_ result: KVResult, to writer: inout ByteWriter) {
  switch result {
  case .put(let revision):
    writer.write(UInt8(1))
    writer.write(revision)
  case .delete(let existed, let revision):
    writer.write(UInt8(2))
    writer.write(existed)
    writer.write(revision)
  case .compareAndSet(let succeeded, let current, let revision):
    writer.write(UInt8(3))
    writer.write(succeeded)
    writer.write(current != nil)
    if let current { writer.writeLengthPrefixed(Array(current.utf8)) }
    writer.write(revision)
  case .rejected(let reason):
    writer.write(UInt8(4))
    writer.writeLengthPrefixed(Array(reason.utf8))
  case .clusterVersion(let version):
    // Never recorded (a set-cluster-version carries no idempotency key); encoded to stay total.
    writer.write(UInt8(5))
    writer.write(version)
  }
}

private func readResult(_ reader: inout ByteReader) throws(KVDecodingError) -> KVResult {
  try mapFailure { () throws(ByteReader.Failure) -> KVResult in
    switch try reader.readUInt8() {
    case 1:
      return .put(revision: try reader.readUInt64())
    case 2:
      let existed = try reader.readBool()
      return .delete(existed: existed, revision: try reader.readUInt64())
    case 3:
      let succeeded = try reader.readBool()
      let current = try reader.readBool() ? try readString(&reader) : nil
      return .compareAndSet(succeeded: succeeded, current: current, revision: try reader.readUInt64())
    case 4:
      return .rejected(reason: try readString(&reader))
    case 5:
      return .clusterVersion(try reader.readUInt32())
    case let other:
      throw .invalidValue("result tag \(other)")
    }
  }
}

private func readString(_ reader: inout ByteReader) throws(ByteReader.Failure) -> String {
  let bytes = try reader.readLengthPrefixed(limit: SnapshotFormat.maxStringBytes)
  guard let string = String(validating: bytes, as: UTF8.self) else { throw .invalidValue("invalid UTF-8") }
  return string
}

private func mapFailure<T>(_ body: () throws(ByteReader.Failure) -> T) throws(KVDecodingError) -> T {
  do {
    return try body()
  } catch {
    switch error {
    case .truncated: throw .truncated
    case .lengthTooLarge(let length, let limit):
      throw .invalidSnapshot("length \(length) above limit \(limit)")
    case .invalidValue(let what): throw .invalidSnapshot(what)
    }
  }
}

/// Rebuilds a snapshot from its stream, fed in chunks of any size. Decoding can run off the state
/// machine's thread; `KVStateMachine.restore(_:)` then installs the result in O(1).
public struct KVSnapshotDecoder {
  private struct Header {
    var appliedIndex: UInt64
    var revision: UInt64
    var entryCount: UInt64
    var dataBytes: UInt64
    var clockMillis: UInt64
    var idempotencyCount: UInt64
    var clusterVersion = ClusterVersion.initial
  }

  private enum Phase: Int, Comparable {
    case header, entries, idempotency, ended
    static func < (left: Phase, right: Phase) -> Bool { left.rawValue < right.rawValue }
  }

  /// Bytes of an incomplete frame carried over to the next chunk.
  private var pending: [UInt8] = []
  private var phase = Phase.header
  private var header: Header?
  private var entries = TreeSet<Entry>()
  private var dataBytes: UInt64 = 0
  private var idempotency = IdempotencyTable()

  public init() {}

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
    guard phase == .ended, pending.isEmpty, let header else { throw .truncated }
    guard header.entryCount == UInt64(entries.count), header.dataBytes == dataBytes,
      header.idempotencyCount == UInt64(idempotency.count)
    else { throw .invalidSnapshot("counts do not match the header") }
    return KVSnapshot(
      appliedIndex: header.appliedIndex, revision: header.revision, dataBytes: Int(dataBytes),
      entries: entries, idempotency: idempotency, clusterVersion: header.clusterVersion)
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
    switch kind {
    case SnapshotFormat.kindHeader: next = .header
    case SnapshotFormat.kindEntries: next = .entries
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
    case .entries:
      try buffer.withUnsafeBytes { bytes in
        Result { () throws(KVDecodingError) in
          try decodeEntries(UnsafeRawBufferPointer(rebasing: bytes[payload]))
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
    let decoded = try mapFailure { () throws(ByteReader.Failure) -> (UInt32, UInt8, Header) in
      (
        try reader.readUInt32(), try reader.readUInt8(),
        Header(
          appliedIndex: try reader.readUInt64(), revision: try reader.readUInt64(),
          entryCount: try reader.readUInt64(), dataBytes: try reader.readUInt64(),
          clockMillis: try reader.readUInt64(), idempotencyCount: try reader.readUInt64())
      )
    }
    guard decoded.0 == SnapshotFormat.magic else { throw .invalidSnapshot("not a key-value snapshot") }
    guard (1...SnapshotFormat.version).contains(decoded.1) else { throw .unsupportedVersion(decoded.1) }
    var header = decoded.2
    if decoded.1 >= 2 {
      header.clusterVersion = try mapFailure { () throws(ByteReader.Failure) in try reader.readUInt32() }
      guard header.clusterVersion > ClusterVersion.initial else {
        throw .invalidSnapshot("a version 2 snapshot of cluster version \(header.clusterVersion)")
      }
    }
    guard reader.isAtEnd else { throw .trailingBytes(reader.remaining) }
    self.header = header
    idempotency.setClock(decoded.2.clockMillis)
  }

  private mutating func decodeEntries(_ bytes: UnsafeRawBufferPointer) throws(KVDecodingError) {
    let revision = header!.revision
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
      let entry = Entry.make(
        key: key, value: value, createRevision: createRevision, modRevision: modRevision, version: version)
      guard entries.insert(entry).inserted else { throw .invalidSnapshot("duplicate key") }
      dataBytes += keyCount + valueCount
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
