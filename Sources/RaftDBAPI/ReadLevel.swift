/// How a read is served (lesson 09 of the course; docs/API.md): `stale` from any member's local state,
/// `default` by the leader within its lease, `consistent` by the leader after confirming its
/// leadership with a quorum (ReadIndex). Clients, the service and every protocol adapter share this
/// one definition.
public enum ReadLevel: String, Sendable, CaseIterable {
  case stale
  case `default`
  case consistent

  /// Parses a level as clients spell it: absent or empty means `default`, and `linearizable` is
  /// accepted for `consistent` (etcd's name for it).
  public init?(parameter: String?) {
    switch parameter {
    case nil, "", "default": self = .default
    case "stale": self = .stale
    case "consistent", "linearizable": self = .consistent
    default: return nil
    }
  }
}
