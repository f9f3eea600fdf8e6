// Request wire format, version 1 (all integers LEB128 varints unless noted):
//
//   version: u8 = 1
//   flags: u8            bit 0: an idempotency key follows; other bits must be 0
//   proposedAtMillis
//   [idempotency key: length, bytes]
//   tag: u8              1 put, 2 delete, 3 compare-and-set, 4 compare-and-delete, 5 set cluster version
//   put:    pair count, then per pair: key length, key, value length, value
//   delete: key length, key
//   cas:    has-expected u8 (0/1), [expected length, expected], key length, key, value length, value
//   cad:    expected length, expected, key length, key            (cluster version 2)
//   set cluster version: version                                 (cluster version 2)
//   6 txn, 7 compact, 8 grant lease, 9 revoke lease, 10 checkpoint leases: see
//   MVCCCommandCodec.swift                                       (cluster version 3)
//
// A build that predates a tag rejects it as unknown; `KVCommand.requiredClusterVersion` keeps such
// commands out of the log until every member knows them.
//
// Strings are UTF-8; the entry must end exactly after the command.

enum RequestFormat {
  static let version: UInt8 = 1
  static let flagIdempotencyKey: UInt8 = 1
  static let tagPut: UInt8 = 1
  static let tagDelete: UInt8 = 2
  static let tagCompareAndSet: UInt8 = 3
  static let tagCompareAndDelete: UInt8 = 4
  static let tagSetClusterVersion: UInt8 = 5
  static let tagTxn: UInt8 = 6
  static let tagCompact: UInt8 = 7
  static let tagGrantLease: UInt8 = 8
  static let tagRevokeLease: UInt8 = 9
  static let tagCheckpointLeases: UInt8 = 10

  /// The cluster version that introduced each command tag: the one table of them.
  static func requiredClusterVersion(ofTag tag: UInt8) -> UInt32 {
    switch tag {
    case tagTxn...: ClusterVersion.multiVersion
    case tagCompareAndDelete...: 2
    default: ClusterVersion.initial
    }
  }
}

extension KVCommand {
  var wireTag: UInt8 {
    switch self {
    case .put: RequestFormat.tagPut
    case .delete: RequestFormat.tagDelete
    case .compareAndSet: RequestFormat.tagCompareAndSet
    case .compareAndDelete: RequestFormat.tagCompareAndDelete
    case .setClusterVersion: RequestFormat.tagSetClusterVersion
    case .txn: RequestFormat.tagTxn
    case .compact: RequestFormat.tagCompact
    case .grantLease: RequestFormat.tagGrantLease
    case .revokeLease: RequestFormat.tagRevokeLease
    case .checkpointLeases: RequestFormat.tagCheckpointLeases
    }
  }

  /// The cluster version a command needs: proposing it earlier would let members that predate it
  /// reject it while the others apply it, and their states would part.
  public var requiredClusterVersion: UInt32 { RequestFormat.requiredClusterVersion(ofTag: wireTag) }
}

extension KVRequest {
  /// The compact, versioned bytes to put in a log entry.
  public func encoded() -> [UInt8] {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(encodedCapacityEstimate)
    bytes.append(RequestFormat.version)
    bytes.append(idempotencyKey == nil ? 0 : RequestFormat.flagIdempotencyKey)
    bytes.appendVarint(proposedAtMillis)
    if let idempotencyKey { bytes.appendLengthPrefixed(idempotencyKey) }
    switch command {
    case .put(let pairs):
      bytes.append(RequestFormat.tagPut)
      bytes.appendVarint(UInt64(pairs.count))
      for pair in pairs {
        bytes.appendLengthPrefixed(pair.key)
        bytes.appendLengthPrefixed(pair.value)
      }
    case .delete(let key):
      bytes.append(RequestFormat.tagDelete)
      bytes.appendLengthPrefixed(key)
    case .compareAndSet(let key, let expected, let value):
      bytes.append(RequestFormat.tagCompareAndSet)
      if let expected {
        bytes.append(1)
        bytes.appendLengthPrefixed(expected)
      } else {
        bytes.append(0)
      }
      bytes.appendLengthPrefixed(key)
      bytes.appendLengthPrefixed(value)
    case .compareAndDelete(let key, let expected):
      bytes.append(RequestFormat.tagCompareAndDelete)
      bytes.appendLengthPrefixed(expected)
      bytes.appendLengthPrefixed(key)
    case .setClusterVersion(let version):
      bytes.append(RequestFormat.tagSetClusterVersion)
      bytes.appendVarint(UInt64(version))
    case .txn(let txn):
      bytes.append(RequestFormat.tagTxn)
      bytes.append(txn)
    case .compact(let revision):
      bytes.append(RequestFormat.tagCompact)
      bytes.appendSigned(revision)
    case .grantLease(let id, let ttl):
      bytes.append(RequestFormat.tagGrantLease)
      bytes.appendSigned(id)
      bytes.appendSigned(ttl)
    case .revokeLease(let id):
      bytes.append(RequestFormat.tagRevokeLease)
      bytes.appendSigned(id)
    case .checkpointLeases(let checkpoints):
      bytes.append(RequestFormat.tagCheckpointLeases)
      bytes.appendVarint(UInt64(checkpoints.count))
      for checkpoint in checkpoints {
        bytes.appendSigned(checkpoint.id)
        bytes.appendSigned(checkpoint.remainingTTL)
      }
    }
    return bytes
  }

  /// Reads what `encoded()` wrote. Any input either decodes or throws; none traps.
  public init(decoding bytes: [UInt8]) throws(KVDecodingError) {
    let decoded = bytes.withUnsafeBytes { raw in
      Result { () throws(KVDecodingError) -> KVRequest in
        let parsed = try ParsedRequest(parsing: raw)
        func string(_ range: Range<Int>) -> String {
          String(decoding: UnsafeRawBufferPointer(rebasing: raw[range]), as: UTF8.self)
        }
        let command: KVCommand
        switch parsed.command {
        case .put(let count, let firstPair):
          var pairs: [KeyValue] = []
          pairs.reserveCapacity(count)
          parsed.forEachPair(in: raw, count: count, from: firstPair) { key, value in
            pairs.append(KeyValue(key: string(key), value: string(value)))
          }
          command = .put(pairs)
        case .delete(let key):
          command = .delete(key: string(key))
        case .compareAndSet(let key, let expected, let value):
          command = .compareAndSet(key: string(key), expected: expected.map(string), value: string(value))
        case .compareAndDelete(let key, let expected):
          command = .compareAndDelete(key: string(key), expected: string(expected))
        case .setClusterVersion(let version):
          command = .setClusterVersion(version)
        case .multiVersion(let multiVersion):
          command = multiVersion
        }
        return KVRequest(
          command: command, idempotencyKey: parsed.idempotencyKey.map(string),
          proposedAtMillis: parsed.proposedAtMillis)
      }
    }
    self = try decoded.get()
  }

  private var encodedCapacityEstimate: Int {
    var total = 16 + (idempotencyKey?.utf8.count ?? 0) + 5
    switch command {
    case .put(let pairs):
      for pair in pairs { total += pair.key.utf8.count + pair.value.utf8.count + 10 }
    case .delete(let key):
      total += key.utf8.count + 5
    case .compareAndSet(let key, let expected, let value):
      total += key.utf8.count + (expected?.utf8.count ?? 0) + value.utf8.count + 16
    case .compareAndDelete(let key, let expected):
      total += key.utf8.count + expected.utf8.count + 10
    case .setClusterVersion, .compact, .grantLease, .revokeLease:
      total += 20
    case .checkpointLeases(let checkpoints):
      total += 10 + checkpoints.count * 12
    case .txn:
      total += 256
    }
    return total
  }
}

/// A request located in borrowed bytes: ranges instead of strings, so `apply` allocates nothing to
/// read it. Constructing one validates the whole structure and every string's UTF-8, so later walks
/// over the pairs cannot fail.
struct ParsedRequest {
  enum Command {
    case put(count: Int, firstPair: Int)
    case delete(key: Range<Int>)
    case compareAndSet(key: Range<Int>, expected: Range<Int>?, value: Range<Int>)
    case compareAndDelete(key: Range<Int>, expected: Range<Int>)
    case setClusterVersion(UInt32)
    /// A command of the multi-version store, decoded whole (these are not on the plain-put path).
    case multiVersion(KVCommand)
  }

  var proposedAtMillis: UInt64
  var idempotencyKey: Range<Int>?
  var command: Command
  /// The command's tag, for `RequestFormat.requiredClusterVersion(ofTag:)`.
  var tag: UInt8

  init(parsing bytes: UnsafeRawBufferPointer) throws(KVDecodingError) {
    var cursor = WireCursor(bytes)
    let version = try cursor.readByte()
    guard version == RequestFormat.version else { throw .unsupportedVersion(version) }
    let flags = try cursor.readByte()
    guard flags & ~RequestFormat.flagIdempotencyKey == 0 else { throw .unknownTag(flags) }
    proposedAtMillis = try cursor.readVarint()
    idempotencyKey = flags & RequestFormat.flagIdempotencyKey != 0 ? try cursor.readUTF8() : nil
    tag = try cursor.readByte()
    switch tag {
    case RequestFormat.tagPut:
      let count = try cursor.readVarint()
      // Each pair takes at least two bytes, which bounds the count before it is trusted.
      guard count <= UInt64(cursor.remaining / 2) else { throw .truncated }
      let firstPair = cursor.offset
      for _ in 0..<count {
        _ = try cursor.readUTF8()
        _ = try cursor.readUTF8()
      }
      command = .put(count: Int(count), firstPair: firstPair)
    case RequestFormat.tagDelete:
      command = .delete(key: try cursor.readUTF8())
    case RequestFormat.tagCompareAndSet:
      let expected: Range<Int>?
      switch try cursor.readByte() {
      case 0: expected = nil
      case 1: expected = try cursor.readUTF8()
      case let other: throw .unknownTag(other)
      }
      let key = try cursor.readUTF8()
      command = .compareAndSet(key: key, expected: expected, value: try cursor.readUTF8())
    case RequestFormat.tagCompareAndDelete:
      let expected = try cursor.readUTF8()
      command = .compareAndDelete(key: try cursor.readUTF8(), expected: expected)
    case RequestFormat.tagSetClusterVersion:
      let version = try cursor.readVarint()
      guard let version = UInt32(exactly: version) else { throw .malformedVarint }
      command = .setClusterVersion(version)
    case RequestFormat.tagTxn:
      command = .multiVersion(.txn(try cursor.readTxn()))
    case RequestFormat.tagCompact:
      command = .multiVersion(.compact(revision: try cursor.readSigned()))
    case RequestFormat.tagGrantLease:
      let id = try cursor.readSigned()
      command = .multiVersion(.grantLease(id: id, ttl: try cursor.readSigned()))
    case RequestFormat.tagRevokeLease:
      command = .multiVersion(.revokeLease(id: try cursor.readSigned()))
    case RequestFormat.tagCheckpointLeases:
      let count = try cursor.readCount(minimumBytes: 2)
      var checkpoints: [LeaseCheckpoint] = []
      checkpoints.reserveCapacity(count)
      for _ in 0..<count {
        let id = try cursor.readSigned()
        checkpoints.append(LeaseCheckpoint(id: id, remainingTTL: try cursor.readSigned()))
      }
      command = .multiVersion(.checkpointLeases(checkpoints))
    default:
      throw .unknownTag(tag)
    }
    guard cursor.remaining == 0 else { throw .trailingBytes(cursor.remaining) }
  }

  /// Walks the pairs of an already validated put.
  @inline(__always)
  func forEachPair(
    in bytes: UnsafeRawBufferPointer, count: Int, from firstPair: Int,
    _ body: (_ key: Range<Int>, _ value: Range<Int>) -> Void
  ) {
    var cursor = WireCursor(bytes, offset: firstPair)
    for _ in 0..<count {
      guard let key = try? cursor.readLengthPrefixed(), let value = try? cursor.readLengthPrefixed()
      else { preconditionFailure("pairs were validated when the request was parsed") }
      body(key, value)
    }
  }
}
