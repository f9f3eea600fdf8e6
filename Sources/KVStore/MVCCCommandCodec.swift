// Wire encoding of the multi-version commands (cluster version 3), inside the request format of
// RequestCodec.swift. Integers are LEB128 varints; signed ones (revisions and versions a compare
// names, lease ids) are zigzag-encoded so that a negative one stays short and decodes exactly.
// Keys and values are bytes (etcd's are), not necessarily UTF-8.
//
//   txn:      compare count, compares, success count, ops, failure count, ops
//   compare:  range, result u8 (0 =, 1 !=, 2 <, 3 >), target u8 (0 value, 1 version, 2 create,
//             3 mod, 4 lease), then the value's bytes or a signed integer
//   range:    key bytes, range end bytes
//   op:       u8 (0 range, 1 put, 2 delete range, 3 txn), then
//             range:  range, limit, revision, sort order u8, sort target u8, flags u8 (1 keys only,
//                     2 count only), min mod, max mod, min create, max create (signed)
//             put:    key, value, lease (signed), flags u8 (1 prev kv, 2 ignore value, 4 ignore lease)
//             delete: range, flags u8 (1 prev kv)
//             txn:    a nested txn
//   compact:  revision (signed)
//   grant:    lease id (signed), ttl seconds (signed)
//   revoke:   lease id (signed)
//   checkpoint: count, then per lease: id (signed), remaining ttl (signed)
//
// Decoding is total: any bytes decode or throw. Nesting is bounded by `maxTxnDepth` and every count
// by the bytes that remain, before anything is allocated for it.

enum MVCCCommandFormat {
  /// How deep transactions may nest: a bound on the decoder's recursion, far above what etcd's
  /// clients build (etcd bounds only the operation count).
  static let maxTxnDepth = 8
}

extension Array where Element == UInt8 {
  mutating func appendSigned(_ value: Int64) {
    appendVarint(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
  }

  mutating func appendBytes(_ bytes: [UInt8]) {
    appendVarint(UInt64(bytes.count))
    append(contentsOf: bytes)
  }

  mutating func append(_ range: KeyRange) {
    appendBytes(range.key)
    appendBytes(range.rangeEnd)
  }

  mutating func append(_ txn: TxnRequest) {
    appendVarint(UInt64(txn.compare.count))
    for compare in txn.compare { append(compare) }
    for branch in [txn.success, txn.failure] {
      appendVarint(UInt64(branch.count))
      for operation in branch { append(operation) }
    }
  }

  private mutating func append(_ compare: Compare) {
    append(compare.range)
    let result: UInt8 =
      switch compare.result {
      case .equal: 0
      case .notEqual: 1
      case .less: 2
      case .greater: 3
      }
    append(result)
    switch compare.target {
    case .value(let value):
      append(0)
      appendBytes(value)
    case .version(let version):
      append(1)
      appendSigned(version)
    case .create(let revision):
      append(2)
      appendSigned(revision)
    case .mod(let revision):
      append(3)
      appendSigned(revision)
    case .lease(let lease):
      append(4)
      appendSigned(lease)
    }
  }

  private mutating func append(_ operation: RequestOp) {
    switch operation {
    case .range(let range):
      append(0)
      append(range.range)
      appendSigned(range.limit)
      appendSigned(range.revision)
      let order: UInt8 =
        switch range.sortOrder {
        case .none: 0
        case .ascend: 1
        case .descend: 2
        }
      let target: UInt8 =
        switch range.sortTarget {
        case .key: 0
        case .version: 1
        case .create: 2
        case .mod: 3
        case .value: 4
        }
      append(order)
      append(target)
      append((range.keysOnly ? 1 : 0) | (range.countOnly ? 2 : 0))
      for bound in [
        range.minModRevision, range.maxModRevision, range.minCreateRevision, range.maxCreateRevision,
      ] {
        appendSigned(bound)
      }
    case .put(let put):
      append(1)
      appendBytes(put.key)
      appendBytes(put.value)
      appendSigned(put.lease)
      append((put.prevKV ? 1 : 0) | (put.ignoreValue ? 2 : 0) | (put.ignoreLease ? 4 : 0))
    case .deleteRange(let delete):
      append(2)
      append(delete.range)
      append(delete.prevKV ? 1 : 0)
    case .txn(let nested):
      append(3)
      append(nested)
    }
  }
}

extension WireCursor {
  mutating func readSigned() throws(KVDecodingError) -> Int64 {
    let raw = try readVarint()
    return Int64(bitPattern: raw >> 1) ^ -Int64(bitPattern: raw & 1)
  }

  mutating func readBytes() throws(KVDecodingError) -> [UInt8] {
    Array(UnsafeRawBufferPointer(rebasing: bytes[try readLengthPrefixed()]))
  }

  /// A count of items that take at least `minimumBytes` each, checked against what remains.
  mutating func readCount(minimumBytes: Int) throws(KVDecodingError) -> Int {
    let count = try readVarint()
    guard count <= UInt64(remaining / minimumBytes) else { throw .truncated }
    return Int(count)
  }

  mutating func readRange() throws(KVDecodingError) -> KeyRange {
    KeyRange(key: try readBytes(), rangeEnd: try readBytes())
  }

  mutating func readFlags(allowed: UInt8) throws(KVDecodingError) -> UInt8 {
    let flags = try readByte()
    guard flags & ~allowed == 0 else { throw .unknownTag(flags) }
    return flags
  }

  mutating func readTxn(depth: Int = 1) throws(KVDecodingError) -> TxnRequest {
    guard depth <= MVCCCommandFormat.maxTxnDepth else { throw .nestedTooDeep }
    var txn = TxnRequest()
    // A compare takes at least 5 bytes, an operation at least 4.
    let compares = try readCount(minimumBytes: 5)
    txn.compare.reserveCapacity(compares)
    for _ in 0..<compares { txn.compare.append(try readCompare()) }
    for branch in 0..<2 {
      let count = try readCount(minimumBytes: 4)
      var operations: [RequestOp] = []
      operations.reserveCapacity(count)
      for _ in 0..<count { operations.append(try readOperation(depth: depth)) }
      if branch == 0 { txn.success = operations } else { txn.failure = operations }
    }
    return txn
  }

  private mutating func readCompare() throws(KVDecodingError) -> Compare {
    let range = try readRange()
    let result: Compare.Result
    switch try readByte() {
    case 0: result = .equal
    case 1: result = .notEqual
    case 2: result = .less
    case 3: result = .greater
    case let other: throw .unknownTag(other)
    }
    let target: Compare.Target
    switch try readByte() {
    case 0: target = .value(try readBytes())
    case 1: target = .version(try readSigned())
    case 2: target = .create(try readSigned())
    case 3: target = .mod(try readSigned())
    case 4: target = .lease(try readSigned())
    case let other: throw .unknownTag(other)
    }
    return Compare(range: range, result, target)
  }

  private mutating func readOperation(depth: Int) throws(KVDecodingError) -> RequestOp {
    switch try readByte() {
    case 0:
      var range = RangeRequest(range: try readRange())
      range.limit = try readSigned()
      range.revision = try readSigned()
      switch try readByte() {
      case 0: range.sortOrder = .none
      case 1: range.sortOrder = .ascend
      case 2: range.sortOrder = .descend
      case let other: throw .unknownTag(other)
      }
      switch try readByte() {
      case 0: range.sortTarget = .key
      case 1: range.sortTarget = .version
      case 2: range.sortTarget = .create
      case 3: range.sortTarget = .mod
      case 4: range.sortTarget = .value
      case let other: throw .unknownTag(other)
      }
      let flags = try readFlags(allowed: 3)
      range.keysOnly = flags & 1 != 0
      range.countOnly = flags & 2 != 0
      range.minModRevision = try readSigned()
      range.maxModRevision = try readSigned()
      range.minCreateRevision = try readSigned()
      range.maxCreateRevision = try readSigned()
      return .range(range)
    case 1:
      var put = PutRequest(key: try readBytes(), value: try readBytes())
      put.lease = try readSigned()
      let flags = try readFlags(allowed: 7)
      put.prevKV = flags & 1 != 0
      put.ignoreValue = flags & 2 != 0
      put.ignoreLease = flags & 4 != 0
      return .put(put)
    case 2:
      let range = try readRange()
      return .deleteRange(DeleteRangeRequest(range: range, prevKV: try readFlags(allowed: 1) != 0))
    case 3:
      return .txn(try readTxn(depth: depth + 1))
    case let other:
      throw .unknownTag(other)
    }
  }
}
