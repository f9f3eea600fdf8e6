extension LinearizabilityChecker {
  /// Shrinks a non-linearizable single-key history to a smaller one that is still not linearizable,
  /// by delta debugging (Zeller's ddmin, removal only): drop chunks of operations while the rest still
  /// fails, halving the chunk size whenever no chunk can go, down to single operations.
  ///
  /// Non-linearizability is not preserved by arbitrary removal in the useful direction: drop the
  /// write a read saw, or the delete before a read of "absent", or the write that made a
  /// compare-and-set fail, and the rest fails for a reason that is not in the original at all. So
  /// an operation is only ever removed together with everything that may have depended on it: for an
  /// operation that changes the value, every operation that may have observed the value it produced
  /// (reads of it, compare-and-sets expecting it, recursively) and every failed compare-and-set that
  /// may have come after it. Observers (reads, failed compare-and-sets) go alone. Then any
  /// linearization of the larger history, restricted, is one of the smaller; so each history the
  /// shrinker keeps fails only if the original does, for a reason it still contains.
  ///
  /// Operations that cannot matter (failed ones, reads with unknown outcome) are dropped first. The
  /// input comes back unchanged if it is not confirmed to fail within the per-check budget (or is
  /// not one key's well-formed history); when the shrink budget runs out, the smallest failing
  /// history found so far is returned.
  public func shrink(_ operations: [Operation]) -> [Operation] {
    if Self.unsuitableKeyHistory(operations) != nil { return operations }
    return shrink(operations, knownFailure: nil)
  }

  /// `knownFailure` is how `operations` was already shown to fail, which spares checking it again.
  func shrink(
    _ operations: [Operation], knownFailure: (mode: SearchMode, frontier: UInt64)?
  ) -> [Operation] {
    var shrinker = Shrinker(KeyProblem(operations).source, checker: self)
    return shrinker.run(knownFailure: knownFailure) ?? operations
  }

  /// One key's operations without those in `removedIDs` and everything that may have depended on
  /// them, by the rule `shrink` uses: if `operations` is linearizable, so is the result. Failed
  /// operations and reads with unknown outcome are dropped as well. Operations that are not one
  /// key's well-formed history come back unchanged.
  public static func removing(
    _ removedIDs: Set<Int>, withDependentsFrom operations: [Operation]
  ) -> [Operation] {
    if unsuitableKeyHistory(operations) != nil { return operations }
    let dependencies = Dependencies(KeyProblem(operations).source)
    let all = Array(dependencies.pool.indices)
    let seed = all.filter { removedIDs.contains(dependencies.pool[$0].id) }
    return dependencies.without(seed, from: all).map { dependencies.pool[$0] }
  }
}

/// Which operations of one key may depend on which, for removing them together.
private struct Dependencies {
  let pool: [Operation]
  /// Per operation in `pool`, as interned value ids: the value it may produce (a mutation) and the
  /// value it observes or expects; and whether it is an acknowledged failed compare-and-set.
  let produces: [Int?]
  let observes: [Int?]
  let failedCas: [Bool]

  init(_ operations: [Operation]) {
    pool = operations.sorted(by: LinearizabilityChecker.timeOrder)
    var ids: [[UInt8]: Int] = [:]
    func id(_ value: String?) -> Int {
      guard let value else { return 0 }
      let bytes = Array(value.utf8)
      if let existing = ids[bytes] { return existing }
      ids[bytes] = ids.count + 1
      return ids.count
    }
    var produces: [Int?] = []
    var observes: [Int?] = []
    var failedCas: [Bool] = []
    for operation in pool {
      var produced: Int?
      var observed: Int?
      var failed = false
      switch (operation.call, operation.outcome) {
      case (.read, .ok(.value(let value))): observed = id(value)
      case (.write(let value), _): produced = id(value)
      case (.delete, _): produced = 0
      case (.cas(let expected, let new), .ok(.cas(true))), (.cas(let expected, let new), .unknown):
        observed = id(expected)
        produced = id(new)
      case (.cas(let expected, _), .ok(.cas(false))):
        observed = id(expected)
        failed = true
      default: break
      }
      produces.append(produced)
      observes.append(observed)
      failedCas.append(failed)
    }
    self.produces = produces
    self.observes = observes
    self.failedCas = failedCas
  }

  /// `current` minus `seed` and everything that may depend on it (see `shrink`): repeated passes,
  /// since a compare-and-set that goes with one value produces another.
  func without(_ seed: [Int], from current: [Int]) -> [Int] {
    var removed = [Bool](repeating: false, count: pool.count)
    var earliestByValue: [Int: UInt64] = [:]
    var earliest = UInt64.max
    var pending = false
    func take(_ index: Int) {
      removed[index] = true
      guard let value = produces[index] else { return }
      let invokedAt = pool[index].invokedAt
      earliestByValue[value] = min(earliestByValue[value] ?? .max, invokedAt)
      earliest = min(earliest, invokedAt)
      pending = true
    }
    for index in seed { take(index) }
    while pending {
      pending = false
      for index in current where !removed[index] {
        let operation = pool[index]
        // Anything that completed before a removed mutation was invoked cannot have seen it.
        let completedAt = operation.outcome == .unknown ? UInt64.max : operation.completedAt ?? .max
        if failedCas[index] && completedAt >= earliest {
          take(index)
        } else if let value = observes[index], let since = earliestByValue[value], completedAt >= since {
          take(index)
        }
      }
    }
    return current.filter { !removed[$0] }
  }
}

private struct Shrinker {
  let dependencies: Dependencies
  var pool: [Operation] { dependencies.pool }
  /// Per check; scaled up with the candidate's size, since a search explores at least a few
  /// configurations per operation.
  let limits: SearchLimits
  let maxChecks: Int
  let deadline: ContinuousClock.Instant
  var checks = 0
  /// The search that showed the input to fail; candidates are judged by the same one, as it is the
  /// cheaper one whenever it suffices.
  var mode: SearchMode?

  init(_ operations: [Operation], checker: LinearizabilityChecker) {
    dependencies = Dependencies(operations)
    deadline = ContinuousClock.now + checker.shrinking.timeLimit
    limits = checker.searchLimits(
      maxStates: checker.shrinking.maxStatesPerCheck, deadline: deadline)
    maxChecks = checker.shrinking.maxChecks
  }

  var withinBudget: Bool { checks < maxChecks && ContinuousClock.now < deadline }

  mutating func run(knownFailure: (mode: SearchMode, frontier: UInt64)?) -> [Operation]? {
    var current = Array(pool.indices)
    let frontier: UInt64
    if let knownFailure {
      mode = knownFailure.mode
      frontier = knownFailure.frontier
    } else {
      guard let shown = failing(current) else { return nil }
      frontier = shown
    }
    // Operations invoked after the frontier were never candidates for linearization, so without
    // them the history usually still fails; a cheap first cut when the violation is early.
    let late = current.filter { pool[$0].invokedAt > frontier }
    if !late.isEmpty {
      let candidate = dependencies.without(late, from: current)
      if candidate.count < current.count, failing(candidate) != nil { current = candidate }
    }
    var chunk = max(current.count / 2, 1)
    while current.count >= 2 && withinBudget {
      var removed = false
      var start = 0
      while start < current.count && withinBudget {
        let seed = Array(current[start..<min(start + chunk, current.count)])
        let candidate = dependencies.without(seed, from: current)
        if !candidate.isEmpty, failing(candidate) != nil {
          // Stay at `start`: later operations have moved into this position.
          current = candidate
          removed = true
        } else {
          start += chunk
        }
      }
      // Another pass at the same size can find more once something went; otherwise go finer, and
      // stop after a fruitless pass over single operations.
      if !removed {
        if chunk == 1 { break }
        chunk = max(chunk / 2, 1)
      }
      chunk = min(chunk, max(current.count / 2, 1))
    }
    return current.map { pool[$0] }
  }

  /// The frontier of the candidate's failing search, or nil if it is not shown to fail.
  mutating func failing(_ candidate: [Int]) -> UInt64? {
    checks += 1
    let problem = KeyProblem(candidate.map { pool[$0] })
    var limits = limits
    limits.maxStates = max(limits.maxStates, 100 * candidate.count)
    let verdict: SearchVerdict
    if let mode {
      verdict = searchLinearization(problem, limits: limits, mode: mode)
    } else {
      (verdict, mode) = decideLinearizability(problem, limits: limits)
    }
    guard case .notLinearizable(let frontier, _, _) = verdict else { return nil }
    return frontier
  }
}
