/// A client request against one key, with its arguments. `delete` is separate from `write` because the
/// server reports a deleted key as absent (404), which is the same observation as a never-written key.
public enum Call: Hashable, Sendable {
  case read
  case write(String)
  case delete
  /// `expected == nil` asks for the key to be absent.
  case cas(expected: String?, new: String)
}

/// What an acknowledged operation reported. Reads report the value (nil for absent), compare-and-set
/// reports whether it swapped; writes and deletes report nothing beyond success.
public enum Response: Hashable, Sendable {
  case done
  case value(String?)
  case cas(succeeded: Bool)
}

/// How an operation ended, from the client's point of view.
public enum Outcome: Hashable, Sendable {
  /// Completed with a known response.
  case ok(Response)
  /// Definitely had no effect (rejected before it was proposed), so the checker ignores it.
  case failed
  /// Indeterminate (timeout, reset, "outcome unknown"): it may take effect at any moment after its
  /// invocation, even long after the client gave up, or never.
  case unknown
}

/// One client operation. Times are monotonic nanoseconds from a clock shared by every client of the
/// history; only their order matters.
public struct Operation: Hashable, Sendable, Identifiable {
  /// Unique within a history; reports and shrunk histories refer to operations by it.
  public var id: Int
  /// The client that issued it. The checker does not need it (real-time order is what matters),
  /// but it makes reports readable.
  public var process: Int
  public var key: String
  public var call: Call
  public var invokedAt: UInt64
  /// When the client saw the response. Ignored for `.unknown` outcomes, which are treated as
  /// completing at +infinity; required for `.ok`.
  public var completedAt: UInt64?
  public var outcome: Outcome

  public init(
    id: Int, process: Int, key: String, call: Call, invokedAt: UInt64, completedAt: UInt64?,
    outcome: Outcome
  ) {
    self.id = id
    self.process = process
    self.key = key
    self.call = call
    self.invokedAt = invokedAt
    self.completedAt = completedAt
    self.outcome = outcome
  }
}

/// A recorded run: every operation any client attempted, in any order.
public struct History: Hashable, Sendable {
  public var operations: [Operation]

  public init(_ operations: [Operation] = []) {
    self.operations = operations
  }

  public mutating func append(_ operation: Operation) {
    operations.append(operation)
  }

  /// The keys touched, sorted so that checking and reports are deterministic.
  public var keys: [String] {
    var seen = Set<[UInt8]>()
    var keys: [String] = []
    for operation in operations where seen.insert(Array(operation.key.utf8)).inserted {
      keys.append(operation.key)
    }
    return keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
  }

  /// The operations on one key, in their original order. Keys are compared byte for byte, as the
  /// server does, rather than by Swift's canonical-equivalence `String` equality.
  public func operations(forKey key: String) -> [Operation] {
    operations.filter { $0.key.utf8.elementsEqual(key.utf8) }
  }

  /// Problems that make the history meaningless to check, each naming the operation; empty when it is
  /// well formed. The checker refuses (with `.unknown`) rather than guess what a malformed record meant.
  public func validationErrors() -> [String] {
    var errors: [String] = []
    var ids = Set<Int>()
    for operation in operations {
      let name = "operation #\(operation.id)"
      if !ids.insert(operation.id).inserted {
        errors.append("\(name): duplicate id")
      }
      guard case .ok(let response) = operation.outcome else { continue }
      guard let completedAt = operation.completedAt else {
        errors.append("\(name): completed with a response but has no completion time")
        continue
      }
      if completedAt < operation.invokedAt {
        errors.append("\(name): completed (\(completedAt)) before it was invoked (\(operation.invokedAt))")
      }
      switch (operation.call, response) {
      case (.read, .value), (.write, .done), (.delete, .done), (.cas, .cas): break
      default:
        errors.append("\(name): response \(response) does not fit call \(operation.call)")
      }
    }
    return errors
  }
}
