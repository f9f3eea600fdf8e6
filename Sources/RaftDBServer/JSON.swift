/// A JSON value, as parsed from a request body.
enum JSONValue: Equatable, Sendable {
  case object([(key: String, value: JSONValue)])
  case array([JSONValue])
  case string(String)
  /// Numbers are kept as their text; no API field is numeric.
  case number(String)
  case bool(Bool)
  case null

  static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
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

  var typeName: String {
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

struct JSONError: Error, Sendable, CustomStringConvertible {
  var message: String
  var offset: Int
  var description: String { "malformed JSON at byte \(offset): \(message)" }
}

/// A strict RFC 8259 parser (no trailing commas, no comments, no duplicate keys, no lone
/// surrogates) with a nesting limit and a limit on the number of values: request bodies come from
/// anyone. It runs in time linear in the input: duplicate keys are found with a set once an object
/// grows past a few members (comparing each key with every earlier one made an 8 MiB body of tiny
/// members minutes of CPU).
struct JSONParser {
  /// Values (scalars, objects and arrays, at any depth) one document may hold: far above what any
  /// request needs (a put holds at most 1,024 pairs), far below what an 8 MiB body could carry.
  static let defaultMaxValues = 16_384

  private let bytes: [UInt8]
  private var position = 0
  private var depth = 0
  private let maxDepth: Int
  private var values = 0
  private let maxValues: Int

  static func parse(
    _ bytes: [UInt8], maxDepth: Int = 16, maxValues: Int = defaultMaxValues
  ) throws(JSONError) -> JSONValue {
    var parser = JSONParser(bytes: bytes, maxDepth: maxDepth, maxValues: maxValues)
    parser.skipWhitespace()
    let value = try parser.parseValue()
    parser.skipWhitespace()
    guard parser.position == bytes.count else { throw parser.error("unexpected data after the value") }
    return value
  }

  private init(bytes: [UInt8], maxDepth: Int, maxValues: Int) {
    self.bytes = bytes
    self.maxDepth = maxDepth
    self.maxValues = maxValues
  }

  private func error(_ message: String) -> JSONError { JSONError(message: message, offset: position) }

  private var current: UInt8? { position < bytes.count ? bytes[position] : nil }

  private mutating func skipWhitespace() {
    while let byte = current, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { position += 1 }
  }

  private mutating func expect(_ literal: StaticString) throws(JSONError) {
    let count = literal.utf8CodeUnitCount
    guard position + count <= bytes.count else { throw error("truncated literal") }
    let matches = literal.withUTF8Buffer { literalBytes in
      (0..<count).allSatisfy { bytes[position + $0] == literalBytes[$0] }
    }
    guard matches else { throw error("invalid literal") }
    position += count
  }

  private mutating func parseValue() throws(JSONError) -> JSONValue {
    values += 1
    guard values <= maxValues else { throw error("more than \(maxValues) values") }
    guard let byte = current else { throw error("unexpected end of input") }
    switch byte {
    case UInt8(ascii: "{"): return try parseObject()
    case UInt8(ascii: "["): return try parseArray()
    case UInt8(ascii: "\""): return .string(try parseString())
    case UInt8(ascii: "t"):
      try expect("true")
      return .bool(true)
    case UInt8(ascii: "f"):
      try expect("false")
      return .bool(false)
    case UInt8(ascii: "n"):
      try expect("null")
      return .null
    case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
    default: throw error("unexpected character")
    }
  }

  private mutating func enter() throws(JSONError) {
    depth += 1
    guard depth <= maxDepth else { throw error("nested deeper than \(maxDepth) levels") }
  }

  private mutating func parseObject() throws(JSONError) -> JSONValue {
    try enter()
    defer { depth -= 1 }
    position += 1
    var members: [(key: String, value: JSONValue)] = []
    // Small objects compare keys directly; past `setThreshold` members a set keeps it linear.
    let setThreshold = 16
    var keys: Set<String> = []
    skipWhitespace()
    if current == UInt8(ascii: "}") {
      position += 1
      return .object(members)
    }
    while true {
      skipWhitespace()
      guard current == UInt8(ascii: "\"") else { throw error("expected a string key") }
      let key = try parseString()
      if members.count < setThreshold {
        guard !members.contains(where: { $0.key == key }) else { throw error("duplicate key \"\(key)\"") }
      } else {
        if keys.isEmpty { keys = Set(members.map(\.key)) }
        guard keys.insert(key).inserted else { throw error("duplicate key \"\(key)\"") }
      }
      skipWhitespace()
      guard current == UInt8(ascii: ":") else { throw error("expected ':'") }
      position += 1
      skipWhitespace()
      members.append((key, try parseValue()))
      skipWhitespace()
      switch current {
      case UInt8(ascii: ","): position += 1
      case UInt8(ascii: "}"):
        position += 1
        return .object(members)
      default: throw error("expected ',' or '}'")
      }
    }
  }

  private mutating func parseArray() throws(JSONError) -> JSONValue {
    try enter()
    defer { depth -= 1 }
    position += 1
    var elements: [JSONValue] = []
    skipWhitespace()
    if current == UInt8(ascii: "]") {
      position += 1
      return .array(elements)
    }
    while true {
      skipWhitespace()
      elements.append(try parseValue())
      skipWhitespace()
      switch current {
      case UInt8(ascii: ","): position += 1
      case UInt8(ascii: "]"):
        position += 1
        return .array(elements)
      default: throw error("expected ',' or ']'")
      }
    }
  }

  private mutating func parseNumber() throws(JSONError) -> String {
    let start = position
    if current == UInt8(ascii: "-") { position += 1 }
    guard let first = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else {
      throw error("bad number")
    }
    if first == UInt8(ascii: "0") { position += 1 } else { skipDigits() }
    if current == UInt8(ascii: ".") {
      position += 1
      guard skipDigits() else { throw error("bad fraction") }
    }
    if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
      position += 1
      if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
      guard skipDigits() else { throw error("bad exponent") }
    }
    return String(decoding: bytes[start..<position], as: UTF8.self)
  }

  @discardableResult
  private mutating func skipDigits() -> Bool {
    let start = position
    while let byte = current, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) { position += 1 }
    return position > start
  }

  private mutating func parseString() throws(JSONError) -> String {
    position += 1
    let start = position
    // Fast path: no escapes — the common case for keys and values.
    while let byte = current, byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\"), byte >= 0x20 {
      position += 1
    }
    if current == UInt8(ascii: "\"") {
      let text = try validUTF8(bytes[start..<position])
      position += 1
      return text
    }
    var scalars: [UInt8] = Array(bytes[start..<position])
    while true {
      guard let byte = current else { throw error("unterminated string") }
      switch byte {
      case UInt8(ascii: "\""):
        position += 1
        return try validUTF8(scalars[...])
      case UInt8(ascii: "\\"):
        position += 1
        guard let escaped = current else { throw error("unterminated escape") }
        position += 1
        switch escaped {
        case UInt8(ascii: "\""): scalars.append(0x22)
        case UInt8(ascii: "\\"): scalars.append(0x5C)
        case UInt8(ascii: "/"): scalars.append(0x2F)
        case UInt8(ascii: "b"): scalars.append(0x08)
        case UInt8(ascii: "f"): scalars.append(0x0C)
        case UInt8(ascii: "n"): scalars.append(0x0A)
        case UInt8(ascii: "r"): scalars.append(0x0D)
        case UInt8(ascii: "t"): scalars.append(0x09)
        case UInt8(ascii: "u"):
          var scalar = try parseHex4()
          if (0xD800...0xDBFF).contains(scalar) {
            guard current == UInt8(ascii: "\\"), position + 1 < bytes.count,
              bytes[position + 1] == UInt8(ascii: "u")
            else { throw error("lone high surrogate") }
            position += 2
            let low = try parseHex4()
            guard (0xDC00...0xDFFF).contains(low) else { throw error("bad low surrogate") }
            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
          } else if (0xDC00...0xDFFF).contains(scalar) {
            throw error("lone low surrogate")
          }
          scalars.append(contentsOf: String(Character(Unicode.Scalar(scalar)!)).utf8)
        default: throw error("invalid escape")
        }
      default:
        guard byte >= 0x20 else { throw error("control character in string") }
        scalars.append(byte)
        position += 1
      }
    }
  }

  private mutating func parseHex4() throws(JSONError) -> UInt32 {
    guard position + 4 <= bytes.count else { throw error("truncated \\u escape") }
    var value: UInt32 = 0
    for _ in 0..<4 {
      let byte = bytes[position]
      let digit: UInt32
      switch byte {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
      case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
      case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
      default: throw error("bad hex digit")
      }
      value = value << 4 | digit
      position += 1
    }
    return value
  }

  private func validUTF8(_ slice: ArraySlice<UInt8>) throws(JSONError) -> String {
    guard let text = String(validating: slice, as: UTF8.self) else { throw error("invalid UTF-8 in string") }
    return text
  }
}

/// Builds JSON responses without Foundation.
struct JSONWriter {
  private(set) var bytes: [UInt8] = []
  private var needsComma = [false]

  init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

  mutating func beginObject() {
    separator()
    bytes.append(UInt8(ascii: "{"))
    needsComma.append(false)
  }

  mutating func endObject() {
    needsComma.removeLast()
    bytes.append(UInt8(ascii: "}"))
  }

  mutating func beginArray() {
    separator()
    bytes.append(UInt8(ascii: "["))
    needsComma.append(false)
  }

  mutating func endArray() {
    needsComma.removeLast()
    bytes.append(UInt8(ascii: "]"))
  }

  mutating func key(_ name: String) {
    separator()
    appendString(name)
    bytes.append(UInt8(ascii: ":"))
    needsComma[needsComma.count - 1] = false
  }

  mutating func string(_ value: String?) {
    separator()
    if let value { appendString(value) } else { bytes.append(contentsOf: "null".utf8) }
  }

  mutating func number(_ value: UInt64) {
    separator()
    bytes.append(contentsOf: String(value).utf8)
  }

  mutating func bool(_ value: Bool) {
    separator()
    bytes.append(contentsOf: (value ? "true" : "false").utf8)
  }

  mutating func field(_ name: String, _ value: String?) {
    key(name)
    string(value)
  }

  mutating func field(_ name: String, _ value: UInt64) {
    key(name)
    number(value)
  }

  mutating func field(_ name: String, _ value: Bool) {
    key(name)
    bool(value)
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
  static func error(_ message: String) -> [UInt8] {
    var writer = JSONWriter()
    writer.beginObject()
    writer.field("error", message)
    writer.endObject()
    return writer.bytes
  }
}
