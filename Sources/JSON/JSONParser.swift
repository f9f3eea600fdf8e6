/// Why a document was refused, and where.
public struct JSONError: Error, Sendable, CustomStringConvertible {
  public var message: String
  /// Bytes from the start of the document to where the parser stopped.
  public var offset: Int
  public var description: String { "malformed JSON at byte \(offset): \(message)" }
}

/// The JSON parser of the whole package: the server's request bodies, the client's responses,
/// raftctl's cluster manifest and benchmark, the verifier's workload.
///
/// Strict RFC 8259: no trailing commas, no comments, no duplicate keys, no lone surrogates, no
/// control characters in strings, valid UTF-8, nothing after the value. Request bodies come from
/// anyone, so its work is bounded whatever the input:
/// - **Time linear in the input.** Every byte is looked at a bounded number of times. Duplicate keys
///   are found by comparing with the earlier keys while an object has at most 16 members, and with a
///   set of them beyond (comparing each key with every earlier one made an 8 MiB body of tiny
///   members minutes of CPU).
/// - **Depth:** at most `maxDepth` (default `defaultMaxDepth`, 16) nested objects and arrays, so the
///   recursion's stack is bounded.
/// - **Values:** at most `maxValues` (default `defaultMaxValues`, 16,384) values per document,
///   counting every scalar, object and array at any depth (an object's keys are not counted). So an
///   object has at most 16,383 members and an array at most 16,383 elements; the parser stops at the
///   first value past the bound, having read no further than it, and the tree it builds is bounded.
///
/// Past a bound it throws a `JSONError` that names it ("nested deeper than 16 levels", "more than
/// 16384 values") with the byte offset; docs/API.md documents the same bounds for request bodies.
public struct JSONParser {
  /// Nesting of objects and arrays one document may have.
  public static let defaultMaxDepth = 16
  /// Values (scalars, objects and arrays, at any depth) one document may hold: far above what any
  /// request or response needs (a put holds at most 1,024 pairs), far below what an 8 MiB body could
  /// carry.
  public static let defaultMaxValues = 16_384

  private let bytes: [UInt8]
  private var position = 0
  private var depth = 0
  private let maxDepth: Int
  private var values = 0
  private let maxValues: Int

  /// The one value `bytes` hold, with optional whitespace around it.
  public static func parse(
    _ bytes: [UInt8], maxDepth: Int = defaultMaxDepth, maxValues: Int = defaultMaxValues
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

  /// Steps over an opening bracket; whether the container is empty (then also past `closing`).
  private mutating func openIsEmpty(closing: UInt8) -> Bool {
    position += 1
    skipWhitespace()
    guard current == closing else { return false }
    position += 1
    return true
  }

  /// After an element: true past a comma (another element follows), false past `closing`.
  private mutating func continues(closing: UInt8) throws(JSONError) -> Bool {
    skipWhitespace()
    switch current {
    case UInt8(ascii: ","):
      position += 1
      return true
    case closing:
      position += 1
      return false
    default: throw error("expected ',' or '\(Character(Unicode.Scalar(closing)))'")
    }
  }

  private mutating func parseObject() throws(JSONError) -> JSONValue {
    try enter()
    defer { depth -= 1 }
    var members: [(key: String, value: JSONValue)] = []
    if openIsEmpty(closing: UInt8(ascii: "}")) { return .object(members) }
    // Small objects compare keys directly; past `setThreshold` members a set keeps it linear.
    let setThreshold = 16
    var keys: Set<String> = []
    repeat {
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
    } while try continues(closing: UInt8(ascii: "}"))
    return .object(members)
  }

  private mutating func parseArray() throws(JSONError) -> JSONValue {
    try enter()
    defer { depth -= 1 }
    var elements: [JSONValue] = []
    if openIsEmpty(closing: UInt8(ascii: "]")) { return .array(elements) }
    repeat {
      skipWhitespace()
      elements.append(try parseValue())
    } while try continues(closing: UInt8(ascii: "]"))
    return .array(elements)
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
    var highBits: UInt8 = 0
    while let byte = current, byte != UInt8(ascii: "\""), byte != UInt8(ascii: "\\"), byte >= 0x20 {
      highBits |= byte
      position += 1
    }
    if current == UInt8(ascii: "\"") {
      let text = try validUTF8(bytes[start..<position], ascii: highBits < 0x80)
      position += 1
      return text
    }
    var scalars: [UInt8] = Array(bytes[start..<position])
    while true {
      guard let byte = current else { throw error("unterminated string") }
      switch byte {
      case UInt8(ascii: "\""):
        position += 1
        return try validUTF8(scalars[...], ascii: false)
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

  /// `slice` as a string, if it is valid UTF-8. Not `String(validating:as:)`: it is generic over the
  /// encoding and, unspecialized, looked up type metadata on every call, which was a third of the
  /// time of parsing an etcd response. Decoding replaces invalid sequences with U+FFFD, so the input
  /// was valid exactly when decoding left its bytes unchanged (checked unless it is known to be ASCII).
  private func validUTF8(_ slice: ArraySlice<UInt8>, ascii: Bool) throws(JSONError) -> String {
    let text = String(decoding: slice, as: UTF8.self)
    guard ascii || text.utf8.elementsEqual(slice) else {
      throw error("invalid UTF-8 in string")
    }
    return text
  }
}
