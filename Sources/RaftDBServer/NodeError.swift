import KVStore
import Raft

/// Why the node could not serve a request; the HTTP layer maps each case to a status code.
public enum NodeError: Error, Sendable, CustomStringConvertible {
  /// This node is not the leader: redirect to `leader` (307) or, if unknown, answer 503.
  case notLeader(leader: MemberInfo?)
  /// Temporarily unable (no leader, overloaded, leadership transfer, catching up): retry later (503).
  case unavailable(String)
  /// The outcome is unknown (timed out after proposing, or leadership changed): retry with the same
  /// Idempotency-Key to be sure it applies exactly once (503).
  case outcomeUnknown(String)
  case invalid(String)
  case conflict(String)
  case notFound(String)
  /// The node is shutting down or its storage failed.
  case stopped(String)

  public var description: String {
    switch self {
    case .notLeader(let leader): "not the leader (leader: \(leader?.name ?? "unknown"))"
    case .unavailable(let why), .outcomeUnknown(let why), .invalid(let why), .conflict(let why),
      .notFound(let why), .stopped(let why):
      why
    }
  }
}

/// How a read is served (lesson 09): `stale` from any node's local state; `default` by the leader
/// within its lease; `consistent` by the leader after confirming leadership with a quorum.
public enum ReadLevel: String, Sendable, CaseIterable {
  case stale
  case `default`
  case consistent

  public init?(parameter: String?) {
    switch parameter {
    case nil, "", "default": self = .default
    case "stale": self = .stale
    case "consistent", "linearizable": self = .consistent
    default: return nil
    }
  }
}

/// The outcome of a write, with whether it replayed an earlier result (idempotent retry).
public struct WriteOutcome: Sendable {
  public var result: KVResult
  public var replayed: Bool
}
