/// Why a saved history could not be read back.
public struct HistoryDecodingError: Error, Sendable, Equatable, CustomStringConvertible {
  /// 1-based line in the input.
  public var line: Int
  public var message: String

  public var description: String { "line \(line): \(message)" }
}

/// A line-based text format, so that failing histories can be saved by the harness, read and edited by
/// people, and replayed by `raftctl verify --replay FILE` without Foundation:
///
///     raftdb-history v1
///     # comments and blank lines are ignored
///     op id=1 process=2 key="k" call=write value="a" invoked=100 completed=250 outcome=ok
///     op id=2 process=1 key="k" call=read invoked=120 completed=300 outcome=ok result="a"
///     op id=3 process=3 key="k" call=read invoked=130 completed=310 outcome=ok result=absent
///     op id=4 process=1 key="k" call=cas expected=absent new="b" invoked=400 outcome=unknown
///     op id=5 process=2 key="k" call=cas expected="a" new="c" invoked=401 completed=420 outcome=ok swapped=false
///     op id=6 process=2 key="k" call=delete invoked=500 completed=510 outcome=failed
///
/// Strings are always double-quoted (escapes: `\"`, `\\`, `\n`, `\r`, `\t`, `\u{hex}`) and kept
/// scalar for scalar; the bare word `absent` is a missing value. `completed` is omitted when the
/// client never saw a response. Text before the header line is ignored.
extension History {
  public static let formatHeader = "raftdb-history v1"

  public func encoded() -> String {
    var text = Self.formatHeader + "\n"
    for operation in operations {
      text += Self.encodeLine(operation)
      text += "\n"
    }
    return text
  }

  static func encodeLine(_ operation: Operation) -> String {
    var line = "op id=\(operation.id) process=\(operation.process) key=\(quoted(operation.key))"
    switch operation.call {
    case .read: line += " call=read"
    case .write(let value): line += " call=write value=\(quoted(value))"
    case .delete: line += " call=delete"
    case .cas(let expected, let new):
      line += " call=cas expected=\(expected.map(quoted) ?? "absent") new=\(quoted(new))"
    }
    line += " invoked=\(operation.invokedAt)"
    if let completedAt = operation.completedAt { line += " completed=\(completedAt)" }
    switch operation.outcome {
    case .failed: line += " outcome=failed"
    case .unknown: line += " outcome=unknown"
    case .ok(.done): line += " outcome=ok"
    case .ok(.value(let value)): line += " outcome=ok result=\(value.map(quoted) ?? "absent")"
    case .ok(.cas(let succeeded)): line += " outcome=ok swapped=\(succeeded)"
    }
    return line
  }

  public init(decoding text: String) throws(HistoryDecodingError) {
    var operations: [Operation] = []
    var sawHeader = false
    var lineNumber = 0
    // Split on scalars: as Characters, "\r\n" is one grapheme and would not split on "\n".
    for rawLine in text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false) {
      lineNumber += 1
      var line = rawLine
      if line.last == "\r" { line = line.dropLast() }
      let trimmed = String(String.UnicodeScalarView(line.drop { $0 == " " || $0 == "\t" }))
      if trimmed.isEmpty || trimmed.first == "#" { continue }
      if !sawHeader {
        // Anything before the header is ignored, so a report can carry its explanation on top of
        // the history it explains and still be replayed.
        sawHeader = trimmed == Self.formatHeader
        continue
      }
      do {
        operations.append(try Self.decodeLine(trimmed))
      } catch {
        throw HistoryDecodingError(line: lineNumber, message: error.message)
      }
    }
    guard sawHeader else {
      throw HistoryDecodingError(
        line: max(lineNumber, 1), message: "no header line \"\(Self.formatHeader)\"")
    }
    self.init(operations)
  }

  private struct LineError: Error {
    var message: String
  }

  private enum FieldValue {
    case bare(String)
    case quoted(String)
  }

  private static func decodeLine(_ line: String) throws(LineError) -> Operation {
    var scalars = Array(line.unicodeScalars)[...]
    func skipSpaces() {
      while let first = scalars.first, first == " " || first == "\t" { scalars.removeFirst() }
    }
    func word() -> String {
      var text = ""
      while let first = scalars.first, first != " ", first != "\t", first != "=", first != "\"" {
        text.unicodeScalars.append(first)
        scalars.removeFirst()
      }
      return text
    }
    guard word() == "op" else { throw LineError(message: "expected a line starting with \"op\"") }
    var fields: [String: FieldValue] = [:]
    while true {
      skipSpaces()
      if scalars.isEmpty { break }
      let name = word()
      guard !name.isEmpty, scalars.first == "=" else {
        throw LineError(message: "expected name=value near \"\(name)\"")
      }
      scalars.removeFirst()
      let value: FieldValue
      if scalars.first == "\"" {
        scalars.removeFirst()
        value = .quoted(try unescape(&scalars))
      } else {
        value = .bare(word())
      }
      guard fields.updateValue(value, forKey: name) == nil else {
        throw LineError(message: "field \"\(name)\" given twice")
      }
    }

    func bare(_ name: String) throws(LineError) -> String {
      guard case .bare(let text)? = fields.removeValue(forKey: name) else {
        throw LineError(message: "missing or quoted field \"\(name)\"")
      }
      return text
    }
    func string(_ name: String) throws(LineError) -> String {
      guard case .quoted(let text)? = fields.removeValue(forKey: name) else {
        throw LineError(message: "missing field \"\(name)\" (a quoted string)")
      }
      return text
    }
    func optionalString(_ name: String) throws(LineError) -> String? {
      switch fields.removeValue(forKey: name) {
      case .quoted(let text)?: return text
      case .bare("absent")?: return nil
      default: throw LineError(message: "field \"\(name)\" must be a quoted string or absent")
      }
    }
    func integer<T: FixedWidthInteger>(_ name: String, as: T.Type) throws(LineError) -> T {
      let text = try bare(name)
      guard let number = T(text) else { throw LineError(message: "field \"\(name)\" is not a number") }
      return number
    }

    let id = try integer("id", as: Int.self)
    let process = try integer("process", as: Int.self)
    let key = try string("key")
    let call: Call
    switch try bare("call") {
    case "read": call = .read
    case "write": call = .write(try string("value"))
    case "delete": call = .delete
    case "cas": call = .cas(expected: try optionalString("expected"), new: try string("new"))
    case let other: throw LineError(message: "unknown call \"\(other)\"")
    }
    let invokedAt = try integer("invoked", as: UInt64.self)
    var completedAt: UInt64?
    if fields["completed"] != nil { completedAt = try integer("completed", as: UInt64.self) }
    let outcome: Outcome
    switch try bare("outcome") {
    case "failed": outcome = .failed
    case "unknown": outcome = .unknown
    case "ok":
      // The response's shape follows its own field, not the call, so that even a malformed record
      // (which the checker will refuse) survives a round trip unchanged.
      if fields["result"] != nil {
        outcome = .ok(.value(try optionalString("result")))
      } else if fields["swapped"] != nil {
        switch try bare("swapped") {
        case "true": outcome = .ok(.cas(succeeded: true))
        case "false": outcome = .ok(.cas(succeeded: false))
        default: throw LineError(message: "field \"swapped\" must be true or false")
        }
      } else {
        outcome = .ok(.done)
      }
    case let other: throw LineError(message: "unknown outcome \"\(other)\"")
    }
    if let extra = fields.keys.sorted().first {
      throw LineError(message: "unexpected field \"\(extra)\"")
    }
    return Operation(
      id: id, process: process, key: key, call: call, invokedAt: invokedAt, completedAt: completedAt,
      outcome: outcome)
  }

  /// Reads a quoted string's body up to and including its closing quote.
  private static func unescape(
    _ scalars: inout ArraySlice<Unicode.Scalar>
  ) throws(LineError) -> String {
    var text = ""
    while let scalar = scalars.popFirst() {
      switch scalar {
      case "\"": return text
      case "\\":
        guard let escaped = scalars.popFirst() else { break }
        switch escaped {
        case "\"", "\\": text.unicodeScalars.append(escaped)
        case "n": text += "\n"
        case "r": text += "\r"
        case "t": text += "\t"
        case "u":
          guard scalars.popFirst() == "{" else { throw LineError(message: "bad \\u escape") }
          var hex = ""
          while let digit = scalars.popFirst(), digit != "}" { hex.unicodeScalars.append(digit) }
          guard let code = UInt32(hex, radix: 16), let decoded = Unicode.Scalar(code) else {
            throw LineError(message: "bad \\u escape")
          }
          text.unicodeScalars.append(decoded)
        default: throw LineError(message: "unknown escape \\\(escaped)")
        }
      default:
        text.unicodeScalars.append(scalar)
      }
    }
    throw LineError(message: "unterminated string")
  }
}
