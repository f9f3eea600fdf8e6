/// The verdict on a history.
public enum CheckResult: Sendable, CustomStringConvertible {
  case linearizable
  /// `minimalHistory` is a (shrunk) sub-history of `key` that is itself not linearizable, so it can
  /// be saved and replayed; `explanation` is a human-readable report including its rendering.
  case notLinearizable(key: String, minimalHistory: [Operation], explanation: String)
  /// The search ran out of budget (or the history was malformed) before reaching a verdict. This
  /// says nothing either way and must not be read as a pass.
  case unknown(reason: String)

  public var isLinearizable: Bool {
    if case .linearizable = self { return true }
    return false
  }

  public var isUnknown: Bool {
    if case .unknown = self { return true }
    return false
  }

  public var description: String {
    switch self {
    case .linearizable: return "linearizable"
    case .notLinearizable(_, _, let explanation): return "NOT linearizable\n" + explanation
    case .unknown(let reason): return "unknown (no verdict): " + reason
    }
  }
}

/// The verdict on one key's operations, without shrinking or explanation.
public enum KeyVerdict: Sendable, Equatable {
  case linearizable
  case notLinearizable
  case unknown(reason: String)
}

/// Checks histories of raftdb's per-key registers for linearizability.
///
/// Keys are independent registers, so a history is linearizable exactly when every key's sub-history
/// is (Herlihy & Wing's locality; Horn & Kroening's P-compositionality). Each key is searched on its
/// own, which turns one search exponential in the whole history into many small ones.
public struct LinearizabilityChecker: Sendable {
  /// Bounds on shrinking a violation. Shrinking only ever improves the report: when it runs out, the
  /// smallest failing history found so far is reported.
  public struct ShrinkOptions: Sendable {
    public var enabled: Bool
    /// Re-checks of candidate sub-histories allowed.
    public var maxChecks: Int
    public var timeLimit: Duration
    /// Per re-check; a candidate whose search exceeds it is treated as "not shown to fail" and kept.
    public var maxStatesPerCheck: Int

    public init(
      enabled: Bool = true, maxChecks: Int = 20_000, timeLimit: Duration = .seconds(30),
      maxStatesPerCheck: Int = 200_000
    ) {
      self.enabled = enabled
      self.maxChecks = maxChecks
      self.timeLimit = timeLimit
      self.maxStatesPerCheck = maxStatesPerCheck
    }
  }

  /// Memoized configurations per key before giving up with `.unknown`.
  public var maxStates: Int
  /// Memory the memoized configurations of one key may use before giving up with `.unknown`.
  public var maxMemoryBytes: Int
  /// Wall-clock budget for the whole check, excluding shrinking.
  public var timeLimit: Duration?
  public var shrinking: ShrinkOptions
  /// Whether to try, before the exact search, a relaxation in which unknown-outcome operations may
  /// take effect repeatedly. It cannot change a verdict, only find violations sooner in long
  /// histories; turning it off is for testing the exact search.
  public var relaxedPrecheck: Bool

  public init(
    maxStates: Int = 10_000_000, maxMemoryBytes: Int = 2 << 30, timeLimit: Duration? = nil,
    shrinking: ShrinkOptions = ShrinkOptions(), relaxedPrecheck: Bool = true
  ) {
    self.maxStates = maxStates
    self.maxMemoryBytes = maxMemoryBytes
    self.timeLimit = timeLimit
    self.shrinking = shrinking
    self.relaxedPrecheck = relaxedPrecheck
  }

  /// Why `operations` cannot be checked as one key's history, if they cannot.
  static func unsuitableKeyHistory(_ operations: [Operation]) -> String? {
    if let first = operations.first,
      operations.contains(where: { !$0.key.utf8.elementsEqual(first.key.utf8) })
    {
      return "the operations are on more than one key"
    }
    let errors = History(operations).validationErrors()
    return errors.isEmpty ? nil : "invalid history: " + errors.prefix(5).joined(separator: "; ")
  }

  func searchLimits(maxStates: Int, deadline: ContinuousClock.Instant?) -> SearchLimits {
    SearchLimits(
      maxStates: maxStates, maxMemoryBytes: maxMemoryBytes, deadline: deadline,
      relaxedPrecheck: relaxedPrecheck)
  }

  /// Checks every key and reports the first violation found (keys in sorted order). A violation on
  /// any key is reported even if another key's search ran out of budget; `.linearizable` only when
  /// every key was fully decided.
  public func check(_ history: History) -> CheckResult {
    let errors = history.validationErrors()
    if !errors.isEmpty {
      let shown = errors.prefix(5).joined(separator: "; ")
      let more = errors.count > 5 ? " (and \(errors.count - 5) more)" : ""
      return .unknown(reason: "invalid history: \(shown)\(more)")
    }
    let clock = ContinuousClock()
    let deadline = timeLimit.map { clock.now + $0 }
    var byKey: [[UInt8]: [Operation]] = [:]
    for operation in history.operations {
      byKey[Array(operation.key.utf8), default: []].append(operation)
    }
    var undecided: [String] = []
    for key in history.keys {
      let operations = byKey[Array(key.utf8)]!
      let problem = KeyProblem(operations)
      let limits = searchLimits(maxStates: maxStates, deadline: deadline)
      let (verdict, decidedBy) = decideLinearizability(problem, limits: limits)
      switch verdict {
      case .linearizable:
        continue
      case .exhausted(let reason):
        undecided.append("key \(quoted(key)): \(reason)")
      case .notLinearizable(let frontier, _, _):
        let minimal =
          shrinking.enabled
          ? shrink(problem.source, knownFailure: (decidedBy, frontier)) : problem.source
        let explanation = explain(key: key, minimal: minimal, keyOperationCount: problem.count)
        return .notLinearizable(key: key, minimalHistory: minimal, explanation: explanation)
      }
    }
    if undecided.isEmpty { return .linearizable }
    return .unknown(reason: undecided.joined(separator: "; "))
  }

  /// Decides one key's operations (all of which must be on the same key), without shrinking.
  public func verdict(forKeyOperations operations: [Operation]) -> KeyVerdict {
    if let problem = Self.unsuitableKeyHistory(operations) { return .unknown(reason: problem) }
    let problem = KeyProblem(operations)
    let deadline = timeLimit.map { ContinuousClock().now + $0 }
    let limits = searchLimits(maxStates: maxStates, deadline: deadline)
    switch decideLinearizability(problem, limits: limits).verdict {
    case .linearizable: return .linearizable
    case .notLinearizable: return .notLinearizable
    case .exhausted(let reason): return .unknown(reason: reason)
    }
  }

  static func timeOrder(_ left: Operation, _ right: Operation) -> Bool {
    (left.invokedAt, left.id) < (right.invokedAt, right.id)
  }

  /// The report for a violation: the operations, how far a consistent order got, and where every
  /// order got stuck.
  func explain(key: String, minimal: [Operation], keyOperationCount: Int) -> String {
    var lines: [String] = []
    let shrunk =
      minimal.count < keyOperationCount
      ? " (shrunk from the \(keyOperationCount) relevant operations on this key)" : ""
    lines.append(
      "Key \(quoted(key)): no order of these \(minimal.count) operations\(shrunk) is consistent with "
        + "both their real-time order and a single register. Times are relative to the first "
        + "invocation; [start, end], end ? = outcome unknown (may take effect any time after start).")
    let rendered = renderOperations(minimal).map { "  " + $0 }
    if rendered.count <= 60 {
      lines.append(contentsOf: rendered)
    } else {
      // The full list is in `minimalHistory`; a report stays readable.
      lines.append(contentsOf: rendered.prefix(30))
      lines.append("  … \(rendered.count - 60) more operations …")
      lines.append(contentsOf: rendered.suffix(30))
    }
    // A plain search (no look-ahead pruning) gets as far as the model allows, which is what a reader
    // expects to see, and names the operation that stops it.
    let problem = KeyProblem(minimal, mergeUnobservedValues: false)
    let limits = searchLimits(maxStates: shrinking.maxStatesPerCheck, deadline: nil)
    guard minimal.count <= 200,
      case .notLinearizable(_, let blocked, let longest) = searchLinearization(
        problem, limits: limits, recordLongest: true)
    else { return lines.joined(separator: "\n") }
    let stuck = problem.source[blocked]
    let origin = minimal.map(\.invokedAt).min() ?? 0
    lines.append(
      "No order gets past #\(stuck.id) (p\(stuck.process) \(describe(stuck)), completed at "
        + "\(stuck.completedAt.map { relativeTime($0, origin: origin) } ?? "?")): every order of the "
        + "operations that may precede it contradicts its response or an earlier one.")
    guard !longest.isEmpty else { return lines.joined(separator: "\n") }
    let acknowledged = longest.filter { $0.op < problem.knownCount }.count
    lines.append(
      "A longest consistent order found places \(acknowledged) of the \(problem.knownCount) "
        + "acknowledged operations (value after each):")
    for (index, step) in longest.enumerated() {
      let operation = problem.source[step.op]
      let after = problem.values[Int(step.valueAfter)].map(quoted) ?? "absent"
      lines.append(
        "  \(index + 1). #\(operation.id) p\(operation.process) \(describe(operation)) -> \(after)")
    }
    return lines.joined(separator: "\n")
  }
}
