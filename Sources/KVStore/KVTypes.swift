/// One key and the value a put assigns to it.
public struct KeyValue: Sendable, Hashable {
  public var key: String
  public var value: String

  public init(key: String, value: String) {
    self.key = key
    self.value = value
  }
}

/// A change a client asks for. Keys and values are compared as UTF-8 bytes (as etcd compares them),
/// not by Unicode canonical equivalence as `String ==` would: two replicas must never disagree on
/// whether two keys are the same, whatever Unicode tables their standard libraries carry.
public enum KVCommand: Sendable, Hashable {
  /// Writes every pair in a single revision, atomically. Rejected if empty or if a key repeats:
  /// "last one wins" would make a key's version count a modification nobody observed (etcd refuses
  /// duplicate keys in a transaction for the same reason).
  case put([KeyValue])
  case delete(key: String)
  /// Writes `value` only if the key's current value is `expected`; `expected == nil` means the key
  /// must be absent.
  case compareAndSet(key: String, expected: String?, value: String)
  /// Deletes the key only if its current value is `expected`: releasing a lock only while one still
  /// holds it. Cluster version 2.
  case compareAndDelete(key: String, expected: String)
  /// Raises the cluster version (never lowers it). The leader proposes it once every member runs a
  /// build that supports `version`; clients cannot. Cluster version 2.
  case setClusterVersion(UInt32)
  /// etcd's Txn, and its Put and DeleteRange with their options (as one-operation transactions):
  /// the multi-version store's writes. Keys are bytes. Cluster version 3.
  case txn(TxnRequest)
  /// Drops the history below `revision` (etcd's Compact). Cluster version 3.
  case compact(revision: Int64)
  /// Creates a lease with `ttl` seconds; the proposer chose the id and raised the TTL to the
  /// minimum. Cluster version 3.
  case grantLease(id: Int64, ttl: Int64)
  /// Deletes a lease and its keys: a client's revoke, or the leader's verdict that it expired.
  /// Cluster version 3.
  case revokeLease(id: Int64)
  /// Records the remaining TTLs the leader computed, so that a new leader neither restarts nor
  /// cuts short a lease (etcd's lease checkpoints). Cluster version 3.
  case checkpointLeases([LeaseCheckpoint])
}

/// A lease's remaining time to live as the leader saw it.
public struct LeaseCheckpoint: Sendable, Hashable {
  public var id: Int64
  public var remainingTTL: Int64

  public init(id: Int64, remainingTTL: Int64) {
    self.id = id
    self.remainingTTL = remainingTTL
  }
}

/// Versions of the replicated command set, agreed by the cluster through its log (as etcd agrees
/// its cluster version). Version 1 is every build before cluster versions; each version adds
/// commands an older build would reject as unknown.
public enum ClusterVersion {
  /// What a cluster runs until its leader has seen every member support more.
  public static let initial: UInt32 = 1
  /// The newest version this build supports: 2 added compare-and-delete and the cluster version
  /// itself; 3 the multi-version commands (transactions, compaction, leases) and the snapshot
  /// format that carries history.
  public static let latest: UInt32 = 3
  /// The version that brought the multi-version commands.
  public static let multiVersion: UInt32 = 3
}

/// What a client proposes; `encoded()` is what goes into the Raft log entry.
public struct KVRequest: Sendable, Hashable {
  public var command: KVCommand
  /// Optional client-chosen key (HTTP Idempotency-Key header); a retry with the same key returns the
  /// original result without applying again. 1–`maxIdempotencyKeyBytes` bytes of printable ASCII,
  /// so that its equality is plain byte equality on every replica.
  public var idempotencyKey: String?
  /// The proposing leader's wall clock in milliseconds; the ONLY time the state machine sees, so that
  /// expiry of idempotency records is deterministic on every replica.
  public var proposedAtMillis: UInt64

  public init(command: KVCommand, idempotencyKey: String? = nil, proposedAtMillis: UInt64) {
    self.command = command
    self.idempotencyKey = idempotencyKey
    self.proposedAtMillis = proposedAtMillis
  }
}

/// The outcome of a command, returned to the proposer and remembered for idempotent retries.
public enum KVResult: Sendable, Hashable {
  case put(revision: UInt64)
  /// `revision` is the store's revision after the operation (unchanged if the key was absent).
  case delete(existed: Bool, revision: UInt64)
  /// `current` is the key's value after the operation, so a loser learns what it lost to. A
  /// compare-and-delete answers with this too (`current` nil once it deleted).
  case compareAndSet(succeeded: Bool, current: String?, revision: UInt64)
  /// The cluster version after a `setClusterVersion`.
  case clusterVersion(UInt32)
  /// A transaction's outcome and the store revision after it.
  case txn(TxnResponse, revision: UInt64)
  /// The store revision once history below the requested one was dropped.
  case compact(revision: UInt64)
  case leaseGranted(id: Int64, ttl: Int64, revision: UInt64)
  /// How many keys the revoke deleted, and the store revision after it.
  case leaseRevoked(deleted: Int64, revision: UInt64)
  case leasesCheckpointed(revision: UInt64)
  /// A request the store refused with one of etcd's errors (compacted, lease not found, duplicate
  /// key, ...): applied in the sense that every replica reached the same verdict, and it changed
  /// nothing.
  case failed(MVCCError, revision: UInt64)
  /// An undecodable or over-limit command; it changed nothing and is not remembered for retries.
  case rejected(reason: String)
}

/// What `apply` returns: the result, and whether it is a remembered one replayed for a retry.
public struct KVApplyOutcome: Sendable, Hashable {
  public var result: KVResult
  /// True when the request's idempotency key was already recorded: nothing was applied and `result`
  /// is the original one.
  public var isDuplicate: Bool

  public init(result: KVResult, isDuplicate: Bool) {
    self.result = result
    self.isDuplicate = isDuplicate
  }
}

/// A key's value and etcd-style metadata.
public struct KVRecord: Sendable, Hashable {
  public var value: String
  /// The revision that created the key (reset when the key is deleted and created again).
  public var createRevision: UInt64
  /// The revision of the key's last modification.
  public var modRevision: UInt64
  /// Modifications since creation; 1 on create.
  public var version: UInt64

  public init(value: String, createRevision: UInt64, modRevision: UInt64, version: UInt64) {
    self.value = value
    self.createRevision = createRevision
    self.modRevision = modRevision
    self.version = version
  }
}

/// Bounds enforced inside `apply` as well as at the HTTP layer: a replica must reach the same verdict
/// from the log alone, so every member of a cluster must run with the same limits.
public struct KVLimits: Sendable, Hashable {
  public var maxKeyBytes = 4096
  public var maxValueBytes = 1 << 20
  public var maxPairsPerPut = 1024
  public var idempotencyRecordsMax = 100_000
  public var idempotencyTTLMillis: UInt64 = 600_000
  public var maxIdempotencyKeyBytes = 256
  /// etcd's `--max-txn-ops`: compares, and operations of each branch, per transaction level.
  public var maxTxnOps = 128
  /// etcd's MaxLeaseTTL: 9,000,000,000 seconds.
  public var maxLeaseTTL: Int64 = 9_000_000_000
  /// Leases one checkpoint command may carry (etcd's maxLeaseCheckpointBatchSize).
  public var maxLeaseCheckpoints = 1000

  public init() {}
}

/// Why bytes could not be read as a request or a snapshot.
public enum KVDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
  case truncated
  case unsupportedVersion(UInt8)
  case unknownTag(UInt8)
  case malformedVarint
  case invalidUTF8
  case trailingBytes(Int)
  case checksumMismatch
  /// A structurally valid snapshot whose content is inconsistent (duplicate keys, frames out of
  /// order, counts that do not add up, ...).
  case invalidSnapshot(String)
  /// Transactions nested deeper than the format allows.
  case nestedTooDeep

  public var description: String {
    switch self {
    case .truncated: "truncated"
    case .unsupportedVersion(let version): "unsupported format version \(version)"
    case .unknownTag(let tag): "unknown tag \(tag)"
    case .malformedVarint: "malformed varint"
    case .invalidUTF8: "invalid UTF-8"
    case .trailingBytes(let count): "\(count) trailing bytes"
    case .checksumMismatch: "checksum mismatch"
    case .invalidSnapshot(let reason): "invalid snapshot: \(reason)"
    case .nestedTooDeep: "transactions nested more than \(MVCCCommandFormat.maxTxnDepth) deep"
    }
  }
}
