/// Identifies one server in a Raft group.
///
/// The core works with compact numeric identities so that messages and progress tables stay small;
/// the server layer maps human-readable names (the course's `-id node01`) onto them and keeps the
/// names and addresses in each member's `context`.
public struct NodeID: Hashable, Comparable, Sendable, CustomStringConvertible {
  /// Never zero: zero is how the wire format spells "no node".
  public let rawValue: UInt64

  public init(_ rawValue: UInt64) {
    precondition(rawValue != 0, "NodeID 0 is reserved for 'no node'")
    self.rawValue = rawValue
  }

  public static func < (lhs: NodeID, rhs: NodeID) -> Bool { lhs.rawValue < rhs.rawValue }

  public var description: String { "n\(rawValue)" }
}
