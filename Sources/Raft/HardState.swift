/// The state a node must write to stable storage before it answers any message that depends on it:
/// forgetting `term` or `vote` after a crash could let one node vote twice in a term and elect two
/// leaders. `commit` is persisted only as a hint that lets a restarted node re-apply sooner.
public struct HardState: Hashable, Sendable, CustomStringConvertible {
  public var term: UInt64
  public var vote: NodeID?
  public var commit: UInt64

  public init(term: UInt64 = 0, vote: NodeID? = nil, commit: UInt64 = 0) {
    self.term = term
    self.vote = vote
    self.commit = commit
  }

  public static let initial = HardState()

  public var description: String {
    "term=\(term) vote=\(vote.map { "\($0)" } ?? "-") commit=\(commit)"
  }
}

/// Describes a snapshot of the state machine: everything up to and including `index` is captured,
/// together with the membership in force at that index. The bytes themselves never pass through the
/// core; the server layer stores and streams them.
public struct SnapshotMetadata: Hashable, Sendable, CustomStringConvertible {
  public var index: UInt64
  public var term: UInt64
  public var configuration: Configuration

  public init(index: UInt64, term: UInt64, configuration: Configuration) {
    self.index = index
    self.term = term
    self.configuration = configuration
  }

  /// The empty snapshot every log implicitly starts from.
  public static let empty = SnapshotMetadata(index: 0, term: 0, configuration: .empty)

  public var position: LogPosition { LogPosition(index: index, term: term) }

  public var description: String { "snapshot(\(index)@\(term) \(configuration))" }
}
