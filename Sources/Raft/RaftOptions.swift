/// Tuning and behaviour switches for one node. Times are in ticks: the core has no clock, and the
/// server decides how long a tick lasts.
public struct RaftOptions: Sendable {
  public var id: NodeID
  /// A follower that hears nothing from a leader for a random time in
  /// [electionTimeoutTicks, 2 × electionTimeoutTicks) starts an election (lesson 07).
  public var electionTimeoutTicks: Int = 10
  public var heartbeatTicks: Int = 1
  /// Seeds the generator behind randomized election timeouts; the only randomness in the core.
  public var randomSeed: UInt64
  /// Campaign only after a pre-vote round shows a quorum would vote (thesis §9.6): a node that was
  /// partitioned away cannot disrupt the cluster by bumping terms.
  public var preVote: Bool = true
  /// A leader steps down when it has not heard from a quorum within an election timeout, and
  /// followers that heard from a leader within an election timeout refuse to vote (the lease that
  /// lease reads rely on).
  public var checkQuorum: Bool = true
  /// Lease reads expire this many ticks before the followers' lease does, to absorb clock drift and
  /// tick phase. Lease reads are safe only if drift over an election timeout stays below this.
  public var leaseSafetyMarginTicks: Int = 2
  /// Upper bound on the bytes of entries in one append message (a single larger entry is refused).
  public var maxMessageBytes: Int = 1 << 20
  /// Append messages in flight to one follower in the replicate state.
  public var maxInflightMessages: Int = 256
  /// Bytes of entries in flight to one follower.
  public var maxInflightBytes: Int = 32 << 20
  /// Proposals are refused once the uncommitted tail of the leader's log holds this many bytes.
  public var maxUncommittedBytes: Int = 64 << 20
  /// Committed entries handed out per `Ready` are bounded by this many bytes.
  public var maxApplyBytesPerReady: Int = 16 << 20
  /// Reads waiting for confirmation (local and forwarded).
  public var maxPendingReads: Int = 65_536
  /// Entries kept in memory below a compaction point, so that a briefly lagging follower can catch
  /// up from the log instead of needing a whole snapshot.
  public var compactionRetainEntries: UInt64 = 0
  /// A byte bound on those retained entries (their payloads): with large entries a count alone could
  /// keep gigabytes in memory. Whichever bound is tighter wins.
  public var compactionRetainBytes: Int = .max

  @_spi(Testing) public var plantedBugs: PlantedBugs = []

  public init(id: NodeID, randomSeed: UInt64) {
    self.id = id
    self.randomSeed = randomSeed
  }

  func validate() {
    precondition(electionTimeoutTicks > heartbeatTicks, "election timeout must exceed the heartbeat interval")
    precondition(heartbeatTicks >= 1)
    precondition(leaseSafetyMarginTicks >= 1 && leaseSafetyMarginTicks < electionTimeoutTicks)
    precondition(maxInflightMessages >= 1 && maxMessageBytes >= 1 && maxInflightBytes >= maxMessageBytes)
    precondition(maxPendingReads >= 1 && maxUncommittedBytes >= maxMessageBytes)
  }
}

/// Known bugs that tests switch on to prove the simulator's checkers detect them. Never set outside
/// tests; the property is only visible through `@_spi(Testing) import Raft`.
@_spi(Testing) public struct PlantedBugs: OptionSet, Sendable, Hashable {
  public let rawValue: UInt8
  public init(rawValue: UInt8) { self.rawValue = rawValue }

  /// Grant a vote to every candidate of the current term, not just the first.
  public static let grantTwoVotesPerTerm = PlantedBugs(rawValue: 1 << 0)
  /// Commit any entry stored on a quorum, even one from an earlier term (Raft paper, Figure 8).
  public static let commitEarlierTermByCounting = PlantedBugs(rawValue: 1 << 1)
  /// Grant votes without checking that the candidate's log is at least as up to date.
  public static let skipUpToDateCheck = PlantedBugs(rawValue: 1 << 2)
  /// Answer ReadIndex requests at once, without the heartbeat round that confirms leadership.
  public static let readIndexWithoutHeartbeat = PlantedBugs(rawValue: 1 << 3)
  /// Take messages from senders outside the configuration (the behaviour before validation at the
  /// boundary): a byzantine outsider's forged appends then rewrite followers' logs.
  public static let acceptNonMembers = PlantedBugs(rawValue: 1 << 4)

  public static let all: [(String, PlantedBugs)] = [
    ("grantTwoVotesPerTerm", .grantTwoVotesPerTerm),
    ("commitEarlierTermByCounting", .commitEarlierTermByCounting),
    ("skipUpToDateCheck", .skipUpToDateCheck),
    ("readIndexWithoutHeartbeat", .readIndexWithoutHeartbeat),
    ("acceptNonMembers", .acceptNonMembers),
  ]
}
