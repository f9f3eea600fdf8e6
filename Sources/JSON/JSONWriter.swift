/// Writes compact JSON (no whitespace) into bytes, without Foundation: the server's responses, the
/// client's request bodies, raftctl's output.
///
/// Strings are escaped as Foundation's JSONSerialization escapes them with `.withoutEscapingSlashes`:
/// `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control characters as `\u00xx`, everything else
/// (`/` and non-ASCII included) as it is.
public struct JSONWriter: Sendable {
  public private(set) var bytes: [UInt8] = []
  /// One entry per open container (and one for the top level): whether the next value needs a comma.
  private var needsComma = [false]

  public init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

  /// The bytes as text.
  public var text: String { String(decoding: bytes, as: UTF8.self) }

  public mutating func beginObject() { begin(UInt8(ascii: "{")) }
  public mutating func endObject() { end(UInt8(ascii: "}")) }
  public mutating func beginArray() { begin(UInt8(ascii: "[")) }
  public mutating func endArray() { end(UInt8(ascii: "]")) }

  private mutating func begin(_ bracket: UInt8) {
    separator()
    bytes.append(bracket)
    needsComma.append(false)
  }

  private mutating func end(_ bracket: UInt8) {
    needsComma.removeLast()
    bytes.append(bracket)
  }

  /// A member's key; its value comes next.
  public mutating func key(_ name: String) {
    separator()
    appendString(name)
    bytes.append(UInt8(ascii: ":"))
    needsComma[needsComma.count - 1] = false
  }

  /// A string, or null for nil.
  public mutating func string(_ value: String?) {
    separator()
    if let value { appendString(value) } else { bytes.append(contentsOf: "null".utf8) }
  }

  public mutating func number(_ value: UInt64) {
    separator()
    bytes.append(contentsOf: String(value).utf8)
  }

  public mutating func number(_ value: Int) {
    separator()
    bytes.append(contentsOf: String(value).utf8)
  }

  public mutating func bool(_ value: Bool) {
    separator()
    bytes.append(contentsOf: (value ? "true" : "false").utf8)
  }

  public mutating func null() {
    separator()
    bytes.append(contentsOf: "null".utf8)
  }

  public mutating func field(_ name: String, _ value: String?) {
    key(name)
    string(value)
  }

  public mutating func field(_ name: String, _ value: UInt64) {
    key(name)
    number(value)
  }

  public mutating func field(_ name: String, _ value: Int) {
    key(name)
    number(value)
  }

  public mutating func field(_ name: String, _ value: Bool) {
    key(name)
    bool(value)
  }

  /// A whole tree. With `sortingKeys`, every object's members are written in the byte order of their
  /// keys' UTF-8 (for lowercase ASCII keys, such as every key raftctl prints, the order of
  /// Foundation's `.sortedKeys`); otherwise in their order in the tree.
  public mutating func value(_ value: JSONValue, sortingKeys: Bool = false) {
    switch value {
    case .object(let members):
      beginObject()
      let ordered =
        sortingKeys ? members.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) } : members
      for member in ordered {
        key(member.key)
        self.value(member.value, sortingKeys: sortingKeys)
      }
      endObject()
    case .array(let elements):
      beginArray()
      for element in elements { self.value(element, sortingKeys: sortingKeys) }
      endArray()
    case .string(let text): string(text)
    case .number(let text):
      separator()
      bytes.append(contentsOf: text.utf8)
    case .bool(let flag): bool(flag)
    case .null: null()
    }
  }

  private mutating func separator() {
    if needsComma[needsComma.count - 1] { bytes.append(UInt8(ascii: ",")) }
    needsComma[needsComma.count - 1] = true
  }

  private mutating func appendString(_ value: String) {
    bytes.append(UInt8(ascii: "\""))
    for byte in value.utf8 {
      switch byte {
      case 0x22: bytes.append(contentsOf: [0x5C, 0x22])
      case 0x5C: bytes.append(contentsOf: [0x5C, 0x5C])
      case 0x08: bytes.append(contentsOf: [0x5C, UInt8(ascii: "b")])
      case 0x0C: bytes.append(contentsOf: [0x5C, UInt8(ascii: "f")])
      case 0x0A: bytes.append(contentsOf: [0x5C, UInt8(ascii: "n")])
      case 0x0D: bytes.append(contentsOf: [0x5C, UInt8(ascii: "r")])
      case 0x09: bytes.append(contentsOf: [0x5C, UInt8(ascii: "t")])
      case 0..<0x20:
        let hex = Array("0123456789abcdef".utf8)
        bytes.append(contentsOf: [
          0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(byte >> 4)], hex[Int(byte & 0xF)],
        ])
      default: bytes.append(byte)
      }
    }
    bytes.append(UInt8(ascii: "\""))
  }

  /// `{"error": message}`.
  public static func error(_ message: String) -> [UInt8] {
    var writer = JSONWriter()
    writer.beginObject()
    writer.field("error", message)
    writer.endObject()
    return writer.bytes
  }
}

extension JSONValue {
  /// The compact text of this value (see `JSONWriter.value` for `sortingKeys`).
  public func serialized(sortingKeys: Bool = false) -> [UInt8] {
    var writer = JSONWriter()
    writer.value(self, sortingKeys: sortingKeys)
    return writer.bytes
  }
}
