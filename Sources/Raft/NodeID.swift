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

  /// The id as operators see it (in `/status`, logs and `/join`): 16 lowercase hex digits, as etcd
  /// prints member ids.
  public var hex: String { HexID.format(rawValue) }

  /// Parses 1 to 16 hex digits; nil for anything else, or for zero.
  public init?(hex text: some StringProtocol) {
    guard let value = HexID.parse(text), value != 0 else { return nil }
    self.init(value)
  }
}

/// The spelling of 64-bit identities (member and cluster ids) for people: 16 lowercase hex digits.
public enum HexID {
  public static func format(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 16 - digits.count) + digits
  }

  /// 1 to 16 hex digits, either case, and nothing else (no sign, no prefix).
  public static func parse(_ text: some StringProtocol) -> UInt64? {
    guard (1...16).contains(text.utf8.count), text.utf8.allSatisfy(\.isHexDigit) else { return nil }
    return UInt64(text, radix: 16)
  }
}

extension UInt8 {
  fileprivate var isHexDigit: Bool {
    (0x30...0x39).contains(self) || (0x41...0x46).contains(self) || (0x61...0x66).contains(self)
  }
}
