extension History {
  /// Renders operations as aligned text lines for reports, ordered by invocation, with times relative
  /// to the first invocation so that a reader can see overlaps at a glance.
  public static func render(_ operations: [Operation]) -> String {
    renderOperations(operations).joined(separator: "\n")
  }

  public func rendered() -> String { Self.render(operations) }
}

func renderOperations(_ operations: [Operation]) -> [String] {
  let sorted = operations.sorted(by: LinearizabilityChecker.timeOrder)
  let origin = sorted.first?.invokedAt ?? 0
  let rows = sorted.map { operation -> [String] in
    let end: String
    if case .unknown = operation.outcome {
      end = "?"
    } else if let completedAt = operation.completedAt {
      end = relativeTime(completedAt, origin: origin)
    } else {
      end = "?"
    }
    return [
      "[\(relativeTime(operation.invokedAt, origin: origin)), \(end)]",
      "p\(operation.process)", "#\(operation.id)", "key \(quoted(operation.key))",
      describe(operation),
    ]
  }
  var widths = [Int](repeating: 0, count: 5)
  for row in rows {
    for (column, cell) in row.enumerated() { widths[column] = max(widths[column], cell.count) }
  }
  return rows.map { row in
    var line = ""
    for (column, cell) in row.enumerated() {
      if column > 0 { line += "  " }
      line += cell
      if column < row.count - 1 { line += String(repeating: " ", count: widths[column] - cell.count) }
    }
    return line
  }
}

/// "write "a" -> ok", "read -> absent", "cas absent -> "b" -> failed", "delete -> unknown".
func describe(_ operation: Operation) -> String {
  let call: String
  switch operation.call {
  case .read: call = "read"
  case .write(let value): call = "write \(quoted(value))"
  case .delete: call = "delete"
  case .cas(let expected, let new): call = "cas \(expected.map(quoted) ?? "absent") -> \(quoted(new))"
  }
  let result: String
  switch operation.outcome {
  case .failed: result = "failed"
  case .unknown: result = "unknown"
  case .ok(.done): result = "ok"
  case .ok(.value(let value)): result = value.map(quoted) ?? "absent"
  case .ok(.cas(let succeeded)): result = succeeded ? "succeeded" : "failed to swap"
  }
  return "\(call) => \(result)"
}

/// Milliseconds with microsecond precision, without Foundation's formatters.
func relativeTime(_ time: UInt64, origin: UInt64) -> String {
  let sign = time >= origin ? "+" : "-"
  let delta = time >= origin ? time - origin : origin - time
  let micros = delta / 1000
  let fraction = String(micros % 1000)
  return "\(sign)\(micros / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction)ms"
}

/// A double-quoted string with the escapes the history format uses, so reports and files agree.
func quoted(_ string: String) -> String {
  var result = "\""
  for scalar in string.unicodeScalars {
    switch scalar {
    case "\"": result += "\\\""
    case "\\": result += "\\\\"
    case "\n": result += "\\n"
    case "\r": result += "\\r"
    case "\t": result += "\\t"
    default:
      if scalar.value < 0x20 || scalar.value == 0x7F {
        result += "\\u{\(String(scalar.value, radix: 16))}"
      } else {
        result.unicodeScalars.append(scalar)
      }
    }
  }
  return result + "\""
}
