// The requests and results of the multi-version store, with etcd v3's meaning (api/etcdserverpb's
// RangeRequest, PutRequest, DeleteRangeRequest, TxnRequest, Compare), so that an etcd gRPC adapter
// maps them field for field. Keys and values are bytes, ordered as unsigned bytes.

/// A point in the store's history: `main` is the store revision a request took (one per mutating
/// request, a whole transaction included); `sub` orders the changes within it.
public struct Revision: Hashable, Comparable, Sendable, CustomStringConvertible {
  public var main: Int64
  public var sub: Int64

  public init(main: Int64, sub: Int64 = 0) {
    self.main = main
    self.sub = sub
  }

  public static func < (a: Revision, b: Revision) -> Bool { (a.main, a.sub) < (b.main, b.sub) }
  public var description: String { "\(main).\(sub)" }

  /// 16 big-endian bytes, whose byte order is the revisions' order (both parts are non-negative).
  var indexKey: [UInt8] {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(16)
    for part in [main, sub] {
      for shift in stride(from: 56, through: 0, by: -8) {
        bytes.append(UInt8(truncatingIfNeeded: part >> shift))
      }
    }
    return bytes
  }

  init(indexKey bytes: [UInt8]) {
    precondition(bytes.count == 16, "a revision index key is 16 bytes")
    func part(_ offset: Int) -> Int64 { bytes[offset..<offset + 8].reduce(0) { $0 << 8 | Int64($1) } }
    self.init(main: part(0), sub: part(8))
  }
}

/// One change as a watcher sees it (etcd's mvccpb.Event): a put with the key's new state, or a
/// delete with the key and the revision that deleted it.
public struct WatchEvent: Hashable, Sendable {
  public enum EventType: Sendable { case put, delete }
  public var type: EventType
  public var kv: MVCCKeyValue
  /// The key's state before this change, when asked for and when it existed.
  public var prevKV: MVCCKeyValue?

  public init(type: EventType, kv: MVCCKeyValue, prevKV: MVCCKeyValue? = nil) {
    self.type = type
    self.kv = kv
    self.prevKV = prevKV
  }
}

/// A key as a reader sees it at some revision (etcd's mvccpb.KeyValue).
public struct MVCCKeyValue: Hashable, Sendable {
  public var key: [UInt8]
  /// The revision of the put that created this generation of the key.
  public var createRevision: Int64
  /// The revision of the key's last change.
  public var modRevision: Int64
  /// 1 on create, +1 per put since; a delete ends the generation.
  public var version: Int64
  public var value: [UInt8]
  /// The lease the key is attached to, 0 for none.
  public var lease: Int64

  public init(
    key: [UInt8], createRevision: Int64, modRevision: Int64, version: Int64, value: [UInt8], lease: Int64
  ) {
    self.key = key
    self.createRevision = createRevision
    self.modRevision = modRevision
    self.version = version
    self.value = value
    self.lease = lease
  }
}

/// Which keys a request covers, in etcd's encoding: `rangeEnd` empty is the single key `key`;
/// `rangeEnd == [0]` is every key from `key` on; otherwise `[key, rangeEnd)`. `key == [0]` with
/// `rangeEnd == [0]` is every key.
public struct KeyRange: Hashable, Sendable {
  public var key: [UInt8]
  public var rangeEnd: [UInt8]

  public init(key: [UInt8], rangeEnd: [UInt8] = []) {
    self.key = key
    self.rangeEnd = rangeEnd
  }

  /// Every key that starts with `prefix` (etcd's `WithPrefix`); every key for an empty prefix.
  public static func prefix(_ prefix: [UInt8]) -> KeyRange {
    guard !prefix.isEmpty else { return KeyRange(key: [0], rangeEnd: [0]) }
    var end = prefix
    while let last = end.last {
      if last < 0xFF {
        end[end.count - 1] = last + 1
        return KeyRange(key: prefix, rangeEnd: end)
      }
      end.removeLast()
    }
    return KeyRange(key: prefix, rangeEnd: [0])  // All 0xFF: to the end.
  }

  public var isSingleKey: Bool { rangeEnd.isEmpty }
  /// The exclusive upper bound, nil for "to the end".
  public var upperBound: [UInt8]? {
    if rangeEnd.isEmpty { return key + [0] }
    if rangeEnd == [0] { return nil }
    return rangeEnd
  }
  public var lowerBound: [UInt8] { key == [0] && rangeEnd == [0] ? [] : key }

  public func contains(_ candidate: [UInt8]) -> Bool {
    if isSingleKey { return candidate == key }
    guard compareKeys(candidate, lowerBound) >= 0 else { return false }
    return upperBound.map { compareKeys(candidate, $0) < 0 } ?? true
  }
}

public struct RangeRequest: Hashable, Sendable {
  public enum SortOrder: Sendable { case none, ascend, descend }
  public enum SortTarget: Sendable { case key, version, create, mod, value }

  public var range: KeyRange
  /// At most this many keys (0: no limit); `more` says whether there were more.
  public var limit: Int64 = 0
  /// Read the store as of this revision (0 or below: the current one).
  public var revision: Int64 = 0
  public var sortOrder: SortOrder = .none
  public var sortTarget: SortTarget = .key
  public var keysOnly = false
  public var countOnly = false
  public var minModRevision: Int64 = 0
  public var maxModRevision: Int64 = 0
  public var minCreateRevision: Int64 = 0
  public var maxCreateRevision: Int64 = 0

  public init(range: KeyRange) { self.range = range }
}

public struct RangeResponse: Hashable, Sendable {
  public var kvs: [MVCCKeyValue]
  public var more: Bool
  /// Keys in the range at the revision read, whatever the limit and filters.
  public var count: Int64
}

public struct PutRequest: Hashable, Sendable {
  public var key: [UInt8]
  public var value: [UInt8]
  public var lease: Int64 = 0
  public var prevKV = false
  /// Keep the key's current value (the key must exist).
  public var ignoreValue = false
  /// Keep the key's current lease (the key must exist).
  public var ignoreLease = false

  public init(key: [UInt8], value: [UInt8], lease: Int64 = 0) {
    self.key = key
    self.value = value
    self.lease = lease
  }
}

public struct PutResponse: Hashable, Sendable {
  public var prevKV: MVCCKeyValue?
}

public struct DeleteRangeRequest: Hashable, Sendable {
  public var range: KeyRange
  public var prevKV = false

  public init(range: KeyRange, prevKV: Bool = false) {
    self.range = range
    self.prevKV = prevKV
  }
}

public struct DeleteRangeResponse: Hashable, Sendable {
  public var deleted: Int64
  public var prevKVs: [MVCCKeyValue]
}

/// A condition of a transaction, on one key or on every key of a range (etcd's Compare). A missing
/// key compares as version, create and mod revision 0 and lease 0; a value comparison on a missing
/// key is false.
public struct Compare: Hashable, Sendable {
  public enum Target: Hashable, Sendable {
    case value([UInt8])
    case version(Int64)
    case create(Int64)
    case mod(Int64)
    case lease(Int64)
  }
  public enum Result: Sendable { case equal, notEqual, less, greater }

  public var range: KeyRange
  public var result: Result
  public var target: Target

  public init(range: KeyRange, _ result: Result, _ target: Target) {
    self.range = range
    self.result = result
    self.target = target
  }
}

public indirect enum RequestOp: Hashable, Sendable {
  case range(RangeRequest)
  case put(PutRequest)
  case deleteRange(DeleteRangeRequest)
  case txn(TxnRequest)
}

public indirect enum ResponseOp: Hashable, Sendable {
  case range(RangeResponse)
  case put(PutResponse)
  case deleteRange(DeleteRangeResponse)
  case txn(TxnResponse)
}

public struct TxnRequest: Hashable, Sendable {
  public var compare: [Compare]
  public var success: [RequestOp]
  public var failure: [RequestOp]

  public init(compare: [Compare] = [], success: [RequestOp] = [], failure: [RequestOp] = []) {
    self.compare = compare
    self.success = success
    self.failure = failure
  }
}

public struct TxnResponse: Hashable, Sendable {
  public var succeeded: Bool
  public var responses: [ResponseOp]
}

/// etcd's errors for these requests (server/storage/mvcc and api/v3rpc/rpctypes), with its messages.
public enum MVCCError: Error, Hashable, Sendable, CustomStringConvertible {
  /// A read of a revision below the compacted one, or a compaction at or below it.
  case compacted(compactRevision: Int64)
  /// A read of, or a compaction at, a revision above the current one.
  case futureRevision
  /// `ignoreValue` or `ignoreLease` on a key that does not exist.
  case keyNotFound
  /// A transaction that puts one key twice, or puts a key that it also deletes.
  case duplicateKey
  case emptyKey
  /// A put or revoke of a lease that does not exist.
  case leaseNotFound
  /// A grant of a lease id that is taken.
  case leaseExists
  /// A grant of a lease id that is not positive.
  case invalidLeaseID

  public var description: String {
    switch self {
    case .compacted: "mvcc: required revision has been compacted"
    case .futureRevision: "mvcc: required revision is a future revision"
    case .keyNotFound: "etcdserver: key not found"
    case .duplicateKey: "etcdserver: duplicate key given in txn request"
    case .emptyKey: "etcdserver: key is not provided"
    case .leaseNotFound: "etcdserver: requested lease not found"
    case .leaseExists: "etcdserver: lease already exists"
    case .invalidLeaseID: "etcdserver: lease ID must be positive"
    }
  }
}

/// A lease as the store keeps it: what the log said about it. When it expires is not here: that
/// is the leader's clock, which proposes a revoke when the time comes (see `MVCCStore.revoke`).
public struct Lease: Hashable, Sendable {
  public var id: Int64
  /// The TTL granted, in seconds (already raised to the cluster's minimum by the proposer).
  public var grantedTTL: Int64
  /// The remaining TTL the leader last checkpointed through the log (0: none yet), so that a new
  /// leader does not restart the full TTL of a lease that was about to expire, nor expire it early.
  public var checkpointedTTL: Int64
  /// The keys attached to it, in byte order.
  public var keys: [[UInt8]]
}
