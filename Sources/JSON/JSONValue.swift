/// A JSON document as a tree: what `JSONParser` returns and what `JSONWriter.value` writes.
///
/// An object keeps its members in document order (the parser refuses duplicate keys, so a key names
/// at most one member). A number keeps its text, so that no precision is lost on the way through;
/// read it with `uint64Value` or `intValue`.
public enum JSONValue: Equatable, Sendable {
  case object([(key: String, value: JSONValue)])
  case array([JSONValue])
  case string(String)
  /// The number's text, in the RFC 8259 grammar (what the parser accepted, or what an initializer
  /// below wrote).
  case number(String)
  case bool(Bool)
  case null

  public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
    switch (lhs, rhs) {
    case (.object(let a), .object(let b)):
      a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    case (.array(let a), .array(let b)): a == b
    case (.string(let a), .string(let b)): a == b
    case (.number(let a), .number(let b)): a == b
    case (.bool(let a), .bool(let b)): a == b
    case (.null, .null): true
    default: false
    }
  }

  /// "an object", "a string", ...: for error messages.
  public var typeName: String {
    switch self {
    case .object: "an object"
    case .array: "an array"
    case .string: "a string"
    case .number: "a number"
    case .bool: "a boolean"
    case .null: "null"
    }
  }
}

// MARK: Building values

extension JSONValue {
  public init(_ value: String) { self = .string(value) }

  /// A string, or null for nil.
  public init(_ value: String?) { self = value.map { .string($0) } ?? .null }

  public init(_ value: Bool) { self = .bool(value) }

  public init(_ value: some BinaryInteger) { self = .number(String(value)) }

  /// A finite number in the shortest text that reads back as `value`, without a trailing ".0"
  /// (12, 0.5, 1e+20), as Foundation's JSONSerialization writes it.
  public init(_ value: Double) {
    precondition(value.isFinite, "JSON has no \(value)")
    var text = value.description
    if text.hasSuffix(".0") { text.removeLast(2) }
    self = .number(text)
  }

  /// An object of `members`, in this order.
  public init(_ members: KeyValuePairs<String, JSONValue>) {
    self = .object(members.map { (key: $0.key, value: $0.value) })
  }
}

// MARK: Reading values

extension JSONValue {
  /// The value of the member named `key`, if this is an object that has one.
  public subscript(key: String) -> JSONValue? {
    guard case .object(let members) = self else { return nil }
    return members.first { $0.key == key }?.value
  }

  /// The element at `index`, if this is an array that long.
  public subscript(index: Int) -> JSONValue? {
    guard case .array(let elements) = self, elements.indices.contains(index) else { return nil }
    return elements[index]
  }

  public var stringValue: String? {
    guard case .string(let text) = self else { return nil }
    return text
  }

  public var boolValue: Bool? {
    guard case .bool(let value) = self else { return nil }
    return value
  }

  /// A number that is a whole number within `UInt64` ("12", not "12.0", "1e1" or "-1").
  public var uint64Value: UInt64? {
    guard case .number(let text) = self else { return nil }
    return UInt64(text)
  }

  /// A number that is a whole number within `Int`.
  public var intValue: Int? {
    guard case .number(let text) = self else { return nil }
    return Int(text)
  }

  public var arrayValue: [JSONValue]? {
    guard case .array(let elements) = self else { return nil }
    return elements
  }

  public var isNull: Bool { self == .null }
}
