import Raft

/// How a `RaftGroup` paces itself. Times are in nanoseconds of the group's clock.
public struct GroupOptions: Sendable {
  /// One core tick (the heartbeat interval).
  public var tickNanoseconds: UInt64 = 100_000_000
  /// The election timeout in ticks: after a pause, more catch-up ticks than four of these change
  /// nothing, so catching up stops there.
  public var electionTimeoutTicks = 10
  /// How long a proposal or read may wait before it fails.
  public var requestTimeoutNanoseconds: UInt64 = 5_000_000_000
  /// Take a snapshot every this many applied entries...
  public var snapshotThresholdEntries: UInt64 = 10_000
  /// ...or this many applied payload bytes, whichever comes first.
  public var snapshotThresholdBytes = Int.max
  /// After a failed snapshot, wait this long before the next attempt.
  public var snapshotRetryNanoseconds: UInt64 = 10_000_000_000
  @_spi(Testing) public var plantedBugs: RuntimeBugs = []

  public init() {}
}

/// Known bugs that can be planted in the runtime (not the core), to prove that the simulator, which
/// runs this runtime, catches them.
@_spi(Testing) public struct RuntimeBugs: OptionSet, Sendable, Hashable {
  public let rawValue: UInt8
  public init(rawValue: UInt8) { self.rawValue = rawValue }

  /// Send votes and append acknowledgements as soon as their write is submitted, before the fsync:
  /// a crash then loses state that was promised (a vote, or entries a leader counted as replicated).
  public static let acknowledgeBeforeFsync = RuntimeBugs(rawValue: 1 << 0)
  /// Let persistence completions through while a received snapshot is still being loaded: the core
  /// then hands out entries above the snapshot to a state machine that does not have it yet.
  public static let applyBeforeRestore = RuntimeBugs(rawValue: 1 << 1)

  public static let all: [(String, RuntimeBugs)] = [
    ("acknowledgeBeforeFsync", .acknowledgeBeforeFsync),
    ("applyBeforeRestore", .applyBeforeRestore),
  ]
}
