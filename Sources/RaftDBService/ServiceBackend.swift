import KVStore
import NIOCore
import Raft
import RaftDBAPI

/// What the service needs from a member: the process shell (`RaftDBNode`) implements it over its
/// Raft group, and tests can implement it without one. Requests reaching it are already validated.
///
/// Futures rather than async functions: a protocol adapter waits on the event loop that owns its
/// connection instead of in a task, which saves the hops through Swift concurrency's thread pool
/// (BENCHMARKS.md). Every failure is a `ServiceError`, or an `EventLoopError` once the member's loop
/// has shut down.
public protocol ServiceBackend: Sendable {
  /// Proposes a validated `KVRequest` on the leader; completes once it is committed and applied,
  /// with the state machine's result. On the leader, after the leadership check, a command whose
  /// `requiredClusterVersion` is above the version the log agreed fails with `failedPrecondition`
  /// (a follower answers `notLeader`, so that the client is sent to the leader, which knows best).
  func submitWrite(_ request: KVRequest) -> EventLoopFuture<WriteOutcome>
  /// The value of `key` in the last published read view of this member (a `stale` read): answered
  /// on the caller's thread.
  func staleRead(_ key: String) -> KVRecord?
  /// A `default` (lease) or `consistent` (ReadIndex) read on the leader, once its state machine has
  /// applied through the read index. `level` is never `stale`.
  func submitRead(_ key: String, level: ReadLevel) -> EventLoopFuture<KVRecord?>
  /// The multi-version store of the last published read view (a `stale` read of it).
  func staleStore() -> MVCCStore
  /// Runs `body` on the leader's store once it may be read at `level` (never `stale`), as
  /// `submitRead` does for one key.
  func submitStoreRead<T: Sendable>(
    level: ReadLevel, _ body: @escaping @Sendable (MVCCStore) throws(ServiceError) -> T
  ) -> EventLoopFuture<T>
  /// This member's watchers, fed by its applied history.
  var watches: WatchDispatcher { get }
  /// Leases on the leader, whose clock decides when they expire (`LeaseClock` in the shell).
  func leaseKeepAlive(_ id: Int64) -> EventLoopFuture<Int64>
  func leaseTimeToLive(_ id: Int64) -> EventLoopFuture<LeaseStatus>
  /// The shortest TTL a lease is granted: shorter requests are raised to it (etcd's minTTL, 1.5
  /// election timeouts, so that a lease can outlive one election).
  var minimumLeaseTTL: Int64 { get }
  func submitStatus() -> EventLoopFuture<MemberStatus>
  /// The cluster id, member id and current term, for etcd's response headers: answered on the
  /// caller's thread (the term as of the node's last turn).
  func memberHeader() -> MemberHeader
  /// This member's build and the cluster version its state machine last published: answered on the
  /// caller's thread.
  func versions() -> VersionInfo
  /// Adds a member (as a learner first; then promotes it unless `asVoter` is false) and says what it
  /// did ("added as voter", "already a member", ...).
  /// Refused (`failedPrecondition`) when the joining member's build does not support the cluster's
  /// version.
  func addMember(_ info: MemberInfo, memberID: NodeID?, asVoter: Bool) async throws(ServiceError) -> String
  /// Removes the member named `name` (or with that member id).
  func removeMember(named name: String) async throws(ServiceError)
  /// Hands leadership to `name` (nil: the most caught-up voter) and waits until it took over;
  /// returns the new leader.
  func transferLeadership(to name: String?) async throws(ServiceError) -> MemberInfo
}

/// Who answered a request, and in which term: etcd's ResponseHeader without the revision, which
/// each request's result carries.
public struct MemberHeader: Sendable, Equatable {
  public var clusterID: UInt64
  public var memberID: UInt64
  public var raftTerm: UInt64

  public init(clusterID: UInt64, memberID: UInt64, raftTerm: UInt64) {
    self.clusterID = clusterID
    self.memberID = memberID
    self.raftTerm = raftTerm
  }
}

/// What `GET /version` says: the newest cluster version this member's build supports, and the one
/// the cluster has agreed through its log.
public struct VersionInfo: Sendable, Equatable {
  public var server: UInt32
  public var cluster: UInt32

  public init(server: UInt32, cluster: UInt32) {
    self.server = server
    self.cluster = cluster
  }
}

/// The outcome of a write, with whether it replayed an earlier result (idempotent retry).
public struct WriteOutcome: Sendable {
  public var result: KVResult
  public var replayed: Bool

  public init(result: KVResult, replayed: Bool) {
    self.result = result
    self.replayed = replayed
  }
}

/// A member's view of itself and its cluster, for `/status` and `/health`.
public struct MemberStatus: Sendable {
  public var name: String
  public var state: String
  public var term: UInt64
  public var leader: MemberInfo?
  public var commitIndex: UInt64
  public var appliedIndex: UInt64
  public var lastLogIndex: UInt64
  public var snapshotIndex: UInt64
  public var members: [(info: MemberInfo, voter: Bool, id: NodeID)]
  public var keys: Int
  public var memberID: NodeID
  public var clusterID: UInt64
  /// Milliseconds since this member last knew it was in touch with a working cluster (a leader: a
  /// quorum acknowledged its heartbeat round; anyone else: it heard from the leader), nil when it
  /// has no such contact. With `electionTimeoutMillis`, what `Readiness` judges.
  public var quorumContactAgeMillis: UInt64?
  public var electionTimeoutMillis: UInt64

  public init(
    name: String, state: String, term: UInt64, leader: MemberInfo?, commitIndex: UInt64,
    appliedIndex: UInt64, lastLogIndex: UInt64, snapshotIndex: UInt64,
    members: [(info: MemberInfo, voter: Bool, id: NodeID)], keys: Int, memberID: NodeID, clusterID: UInt64,
    quorumContactAgeMillis: UInt64? = nil, electionTimeoutMillis: UInt64 = 1000
  ) {
    self.quorumContactAgeMillis = quorumContactAgeMillis
    self.electionTimeoutMillis = electionTimeoutMillis
    self.name = name
    self.state = state
    self.term = term
    self.leader = leader
    self.commitIndex = commitIndex
    self.appliedIndex = appliedIndex
    self.lastLogIndex = lastLogIndex
    self.snapshotIndex = snapshotIndex
    self.members = members
    self.keys = keys
    self.memberID = memberID
    self.clusterID = clusterID
  }
}

/// A lease as its leader sees it: what the log granted, and what remains on the leader's clock.
public struct LeaseStatus: Sendable, Equatable {
  public var id: Int64
  public var grantedTTL: Int64
  /// Seconds until it expires; -1 once it has (its revoke is on its way).
  public var remainingTTL: Int64
  public var keys: [[UInt8]]

  public init(id: Int64, grantedTTL: Int64, remainingTTL: Int64, keys: [[UInt8]]) {
    self.id = id
    self.grantedTTL = grantedTTL
    self.remainingTTL = remainingTTL
    self.keys = keys
  }
}
