/// Bounds on what a peer's message may carry. A correct peer never comes near them; anything beyond
/// is refused at the core's boundary (`RaftNode.step`) before it can change state.
public enum RaftLimits {
  /// The highest term a message may carry. A term grows by one per election; at one election a
  /// millisecond this is 8,900 years away, and it keeps every term far below `Int64.max`, so that
  /// metrics, logs and storage can hold it as a signed 64-bit number. A term beyond it can only come
  /// from a broken or hostile sender, and adopting it would brick the cluster (every later election
  /// would overflow).
  public static let maxTerm: UInt64 = 1 << 48
  /// The highest log index a message may name (commit indexes, match indexes, hints, last indexes).
  public static let maxIndex: UInt64 = 1 << 62
}

/// Why `RaftNode.step` refused a message. A refused message changes nothing in the node; the caller
/// counts and logs it. Each case is impossible from a correct member of this group.
public enum MessageRefusal: Sendable, Hashable, CustomStringConvertible {
  /// The message is addressed to another node.
  case misaddressed
  /// The sender is not in this node's configuration.
  case unknownSender
  /// The term is above `RaftLimits.maxTerm`.
  case termOutOfRange
  /// An index or a count is beyond what the protocol can produce.
  case indexOutOfRange
  /// A leader's message in this node's term from a second leader (or to this node while it leads).
  case secondLeader
  /// A reply that answers something this node never sent (a match beyond its log, a read round
  /// it never started, a read index it never asked for).
  case unsolicitedResponse
  /// Entries that no leader could send: not contiguous, terms above the message's or falling, or an
  /// undecodable configuration. (Entries at or below this node's commit index are skipped, never
  /// compared: by leader completeness they match.)
  case impossibleEntries
  /// A leadership transfer order from a node that is not this node's leader.
  case timeoutNowNotFromLeader

  /// A short, stable name for metrics labels.
  public var label: String {
    switch self {
    case .misaddressed: "misaddressed"
    case .unknownSender: "unknown_sender"
    case .termOutOfRange: "term_out_of_range"
    case .indexOutOfRange: "index_out_of_range"
    case .secondLeader: "second_leader"
    case .unsolicitedResponse: "unsolicited_response"
    case .impossibleEntries: "impossible_entries"
    case .timeoutNowNotFromLeader: "timeout_now_not_from_leader"
    }
  }

  public var description: String {
    switch self {
    case .misaddressed: "addressed to another node"
    case .unknownSender: "sender is not a member of this node's configuration"
    case .termOutOfRange: "term above the limit of \(RaftLimits.maxTerm)"
    case .indexOutOfRange: "index or count beyond what the protocol produces"
    case .secondLeader: "a second leader in the same term"
    case .unsolicitedResponse: "a reply to something this node never sent"
    case .impossibleEntries: "entries no leader could send"
    case .timeoutNowNotFromLeader: "leadership transfer order not from the current leader"
    }
  }

  public static let all: [MessageRefusal] = [
    .misaddressed, .unknownSender, .termOutOfRange, .indexOutOfRange, .secondLeader, .unsolicitedResponse,
    .impossibleEntries, .timeoutNowNotFromLeader,
  ]
}
