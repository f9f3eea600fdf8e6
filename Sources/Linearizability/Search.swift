/// Bounds on one key's search. Exceeding any of them yields `.exhausted`, never a verdict.
struct SearchLimits {
  var maxStates: Int
  var maxMemoryBytes: Int
  var deadline: ContinuousClock.Instant?
  /// Whether `decideLinearizability` tries the relaxation first.
  var relaxedPrecheck = true
}

/// One operation placed in a partial linearization, with the register value it left.
struct LinearizationStep {
  var op: Int
  var valueAfter: Int32
}

enum SearchVerdict {
  case linearizable
  /// `frontier` is the latest completion time at which any branch of the search got stuck; operations
  /// invoked after it were never candidates, so without them the history usually still fails (only
  /// usually: the look-ahead pruning does see them), which makes it the shrinker's first cut.
  /// `culprit` is the operation completing then, which no branch got past. `longest` is filled only
  /// when asked for.
  case notLinearizable(frontier: UInt64, culprit: Int, longest: [LinearizationStep])
  case exhausted(String)
}

/// How unknown-outcome operations are treated.
enum SearchMode {
  /// Each takes effect at most once: the model itself.
  case exact
  /// Each may take effect any number of times. Every linearization of the model is one of this
  /// relaxation, so a history that fails here fails for real; and since nothing is used up, the search
  /// space is that of a history without unknown outcomes. Which of them were spent is what makes the
  /// exact search expensive on long histories, so this is how violations in those get proved.
  case replayableUnknowns
}

func searchLinearization(
  _ problem: KeyProblem, limits: SearchLimits, mode: SearchMode = .exact, recordLongest: Bool = false
) -> SearchVerdict {
  var searcher = Searcher(problem, limits: limits, mode: mode, recordLongest: recordLongest)
  return searcher.run()
}

/// The verdict on one key: the relaxation first, since it is cheap and conclusive when it fails, then
/// the exact search, which alone can show linearizability. Also says which search decided.
func decideLinearizability(
  _ problem: KeyProblem, limits: SearchLimits
) -> (verdict: SearchVerdict, decidedBy: SearchMode) {
  var relaxedReason: String?
  if limits.relaxedPrecheck && problem.unknownCount > 0 {
    let relaxed = searchLinearization(problem, limits: limits, mode: .replayableUnknowns)
    switch relaxed {
    case .notLinearizable: return (relaxed, .replayableUnknowns)
    case .exhausted(let reason): relaxedReason = reason
    case .linearizable: break
    }
  }
  let exact = searchLinearization(problem, limits: limits)
  if case .exhausted(let reason) = exact {
    let relaxed =
      relaxedReason.map { " (the relaxed check letting unknown operations repeat also gave up: \($0))" }
      ?? (problem.unknownCount > 0
        ? " (a relaxed check letting unknown operations repeat found no violation)" : "")
    return (.exhausted(reason + relaxed), .exact)
  }
  return (exact, .exact)
}

/// Wing & Gong's backtracking search with Lowe's just-in-time linearization and memoization, in the
/// shape of Porcupine's `checkSingle`: acknowledged operations sit in a time-ordered, doubly linked
/// list of call and return entries; the candidates for the next linearization point are the calls
/// before the first return entry, and reaching that return without having linearized its operation
/// means this branch is dead. Linearized operations are unlinked, and relinked on backtracking, in
/// O(1).
///
/// Unknown-outcome operations have no return entry (they complete at +infinity) and live in separate
/// lists ordered by invocation. Several reductions keep the hundreds of them that a fault-injection
/// run produces from multiplying the search space; each keeps at least one witness of every
/// linearizable history (docs/LINEARIZABILITY.md has the arguments):
/// - one is linearized only if it changes the value (otherwise omitting it is equivalent);
/// - one is linearized only if an operation in the current window could observe the value it writes,
///   and the next operation linearized must then be an observer (a read, or a compare-and-set), since
///   an effect overwritten unseen is equivalent to no effect;
/// - among pending identical calls only the earliest-invoked is tried, since they are interchangeable;
/// - a value that no unlinearized operation reads or expects any more is "dead", and all dead values
///   are one value as far as the rest of the search can tell. The register's value is kept in that
///   canonical form, and spent unknown writes of dead values are remembered only by their number,
///   since any of them invoked so far could stand in for any other.
///
/// Independently of unknown outcomes:
/// - a branch dies as soon as it moves the register away from a value that an unlinearized read or
///   compare-and-set must still observe when nothing unlinearized that can produce the value again is
///   invoked before that operation's deadline: such a branch can never complete, however long it
///   runs. This is what stops a wrong early choice from being discovered only thousands of operations
///   later. (Before searching, the same test on every value finds reads of values nothing could have
///   written.)
/// - a read or failed compare-and-set that fits the current value is taken at once, without trying
///   the alternatives: it changes nothing, and any completion can be reordered to take it first.
/// - among the window's writes that leave the same (canonical) value, only the one with the earliest
///   deadline is tried: any completion taking another first can swap the two.
///
/// Unknown operations that can only set an unobserved value are tried before the others: spending one
/// of them to make a compare-and-set fail costs nothing later, while spending a write whose value some
/// later read needs sends the search down a long dead branch.
///
/// The history is linearizable once every acknowledged operation is linearized; unknown ones left
/// over are those that never took effect.
private struct Searcher {
  private struct Frame {
    var op: Int32
    var previousValue: Int32
    var previousOwes: Bool
    var previousLow: Int32
    var previousHigh: Int32
    /// Taken without alternatives, so backtracking passes straight through it.
    var forced: Bool
  }

  let kind: [StepKind]
  let a: [Int32]
  let b: [Int32]
  let invokedAt: [UInt64]
  let completedAt: [UInt64]
  let knownCount: Int
  let unknownCount: Int
  let limits: SearchLimits
  let recordLongest: Bool
  /// Whether linearizing an unknown operation uses it up (`SearchMode.exact`).
  let consumesUnknown: Bool
  /// Whether dead values are merged and abandoned values prune; off when recording a linearization
  /// to show people, so that it gets as far as the plain model allows.
  let canonicalize: Bool

  /// Entry `2i` is the call of acknowledged operation `i`, `2i + 1` its return.
  var next: [Int32]
  var prev: [Int32]
  let sentinel: Int32
  /// Node `j` is operation `knownCount + j`. Two circular lists: those producing only an unobserved
  /// value (headed by `firstSentinel`), then the rest (headed by `secondSentinel`).
  var uNext: [Int32]
  var uPrev: [Int32]
  let firstSentinel: Int32
  let secondSentinel: Int32
  let inFirstList: [Bool]
  /// Unknown operations grouped by identical call; `classPos` is the first still pending in a group.
  let classOf: [Int32]
  let classStart: [Int32]
  let classMembers: [Int32]
  var classPos: [Int32]

  /// The value id that stands for every dead value.
  let dead: Int32
  /// Per operation, the value it is obliged to observe (acknowledged reads and successful
  /// compare-and-sets), the acknowledged value it mentions at all (those, and failed
  /// compare-and-sets' expected values), and the value it can produce; -1 for none.
  let observes: [Int32]
  let mentions: [Int32]
  let produces: [Int32]
  /// Per value, how many unlinearized operations mention it. Values an unknown compare-and-set
  /// expects count as always mentioned, so they never die.
  var pendingMentions: [Int32]
  /// Per value (CSR layout), the operations obliged to observe it by completion time, and those that
  /// can produce it by invocation time; each with a cursor before which all are linearized, and each
  /// operation's position in its list (-1 if none).
  let observersStart: [Int32]
  let observersByDeadline: [Int32]
  let producersStart: [Int32]
  let producersByInvocation: [Int32]
  var observerCursor: [Int32]
  var producerCursor: [Int32]
  let observerPosition: [Int32]
  let producerPosition: [Int32]
  /// Per value, the unknown writes of it (CSR layout), to reclassify them when it dies.
  let writersStart: [Int32]
  let writers: [Int32]

  let zobrist: [UInt64]
  var memo: Memo
  var knownSet: [UInt64]
  /// Linearized unknown operations, except writes of dead values, which only `deadSpent` counts.
  var unknownKey: [UInt64]
  var unknownSpent: [Bool]
  var deadSpent: Int32 = 0
  /// The first acknowledged operation (in invocation order) not yet linearized, and the last one
  /// linearized (-1 if none): the bounds of the memo's compact encoding.
  var low: Int32 = 0
  var high: Int32 = -1
  private var frames: [Frame] = []
  var value: Int32 = 0
  /// The last operation linearized was an unknown one, so the next must observe its effect.
  var owesObserver = false
  var zobristHash: UInt64 = 0
  var linearizedKnown = 0

  /// Values some operation in the current window can observe, marked with `generation`.
  var wanted: [UInt32]
  /// Expected values of the window's failed compare-and-sets, marked with `generation`.
  var failedCasExpects: [UInt32]
  var generation: UInt32 = 0
  var bound: UInt64 = 0
  var frontier: UInt64 = 0
  var culprit = 0
  var longest: [LinearizationStep] = []
  var longestKnown = -1
  /// Where the search is: scanning acknowledged candidates from `cursor` (a call entry, or the
  /// first return entry when they are exhausted), or unknown ones from `uCursor`.
  var inUnknownPhase = false
  var cursor: Int32 = 0
  var uCursor: Int32 = 0
  /// Per canonical value, the window's pending acknowledged write of it with the earliest deadline
  /// (marked with `writersGeneration`); recomputed lazily after the configuration changes.
  var bestWriter: [Int32]
  var bestWriterStamp: [UInt32]
  var writersGeneration: UInt32 = 0
  var writersStale = true

  init(_ problem: KeyProblem, limits: SearchLimits, mode: SearchMode, recordLongest: Bool) {
    kind = problem.kind
    a = problem.a
    b = problem.b
    invokedAt = problem.invokedAt
    completedAt = problem.completedAt
    knownCount = problem.knownCount
    unknownCount = problem.unknownCount
    self.limits = limits
    self.recordLongest = recordLongest
    consumesUnknown = mode == .exact
    canonicalize = !recordLongest

    let entryCount = 2 * knownCount
    var order = [Int32](0..<Int32(entryCount))
    let invoked = problem.invokedAt
    let completed = problem.completedAt
    // Calls sort before returns at equal times: operations that merely touch are concurrent.
    order.sort { left, right in
      let leftTime = left & 1 == 0 ? invoked[Int(left >> 1)] : completed[Int(left >> 1)]
      let rightTime = right & 1 == 0 ? invoked[Int(right >> 1)] : completed[Int(right >> 1)]
      if leftTime != rightTime { return leftTime < rightTime }
      if left & 1 != right & 1 { return left & 1 == 0 }
      return left < right
    }
    sentinel = Int32(entryCount)
    next = [Int32](repeating: 0, count: entryCount + 1)
    prev = [Int32](repeating: 0, count: entryCount + 1)
    var last = sentinel
    for entry in order {
      next[Int(last)] = entry
      prev[Int(entry)] = last
      last = entry
    }
    next[Int(last)] = sentinel
    prev[Int(sentinel)] = last

    firstSentinel = Int32(unknownCount)
    secondSentinel = Int32(unknownCount + 1)
    uNext = [Int32](repeating: 0, count: unknownCount + 2)
    uPrev = [Int32](repeating: 0, count: unknownCount + 2)
    let inFirst = (0..<unknownCount).map { problem.producesUnobserved(problem.knownCount + $0) }
    inFirstList = inFirst
    for (head, members) in [
      (firstSentinel, (0..<unknownCount).filter { inFirst[$0] }),
      (secondSentinel, (0..<unknownCount).filter { !inFirst[$0] }),
    ] {
      var tail = head
      for node in members.map(Int32.init) {
        uNext[Int(tail)] = node
        uPrev[Int(node)] = tail
        tail = node
      }
      uNext[Int(tail)] = head
      uPrev[Int(head)] = tail
    }

    struct ClassKey: Hashable {
      var kind: StepKind
      var a: Int32
      var b: Int32
    }
    var classIDs: [ClassKey: Int32] = [:]
    var classOf = [Int32](repeating: 0, count: unknownCount)
    var sizes: [Int32] = []
    for node in 0..<unknownCount {
      let op = knownCount + node
      let key = ClassKey(kind: problem.kind[op], a: problem.a[op], b: problem.b[op])
      let id: Int32
      if let existing = classIDs[key] {
        id = existing
      } else {
        id = Int32(sizes.count)
        classIDs[key] = id
        sizes.append(0)
      }
      classOf[node] = id
      sizes[Int(id)] += 1
    }
    var classStart = [Int32](repeating: 0, count: sizes.count + 1)
    for id in sizes.indices { classStart[id + 1] = classStart[id] + sizes[id] }
    var fill = classStart
    var classMembers = [Int32](repeating: 0, count: unknownCount)
    for node in 0..<unknownCount {
      let id = Int(classOf[node])
      classMembers[Int(fill[id])] = Int32(node)
      fill[id] += 1
    }
    self.classOf = classOf
    self.classStart = classStart
    self.classMembers = classMembers
    classPos = [Int32](repeating: 0, count: sizes.count)

    let valueCount = problem.values.count + 1
    dead = problem.unobserved ?? Int32(problem.values.count)
    var observes = [Int32](repeating: -1, count: problem.count)
    var mentions = observes
    var produces = observes
    pendingMentions = [Int32](repeating: 0, count: valueCount)
    var writerCounts = [Int32](repeating: 0, count: valueCount + 1)
    for op in 0..<problem.count {
      switch problem.kind[op] {
      case .read:
        observes[op] = problem.a[op]
        mentions[op] = problem.a[op]
      case .write: produces[op] = problem.a[op]
      case .unknownWrite:
        produces[op] = problem.a[op]
        writerCounts[Int(problem.a[op]) + 1] += 1
      case .casSucceeded:
        observes[op] = problem.a[op]
        mentions[op] = problem.a[op]
        produces[op] = problem.b[op]
      case .casFailed: mentions[op] = problem.a[op]
      case .unknownCas:
        // Counted once and for good, so that which values are dead depends only on the
        // acknowledged operations linearized; the memo relies on that (see `markUnknown`).
        pendingMentions[Int(problem.a[op])] += 1
        produces[op] = problem.b[op]
      }
      if mentions[op] >= 0 { pendingMentions[Int(mentions[op])] += 1 }
    }
    func buckets(
      _ valueOf: [Int32], by time: [UInt64]
    ) -> (start: [Int32], members: [Int32], position: [Int32]) {
      var start = [Int32](repeating: 0, count: valueCount + 1)
      for op in valueOf.indices where valueOf[op] >= 0 { start[Int(valueOf[op]) + 1] += 1 }
      for index in 0..<valueCount { start[index + 1] += start[index] }
      let ordered = valueOf.indices.filter { valueOf[$0] >= 0 }.sorted { (time[$0], $0) < (time[$1], $1) }
      var fill = start
      var members = [Int32](repeating: 0, count: ordered.count)
      var position = [Int32](repeating: -1, count: valueOf.count)
      for op in ordered {
        let bucket = Int(valueOf[op])
        members[Int(fill[bucket])] = Int32(op)
        position[op] = fill[bucket]
        fill[bucket] += 1
      }
      return (start, members, position)
    }
    let observers = buckets(observes, by: problem.completedAt)
    let producers = buckets(produces, by: problem.invokedAt)
    observersStart = observers.start
    observersByDeadline = observers.members
    observerPosition = observers.position
    observerCursor = Array(observers.start.dropLast())
    producersStart = producers.start
    producersByInvocation = producers.members
    producerPosition = producers.position
    producerCursor = Array(producers.start.dropLast())
    self.observes = observes
    self.mentions = mentions
    self.produces = produces
    for index in 0..<valueCount { writerCounts[index + 1] += writerCounts[index] }
    var writers = [Int32](repeating: 0, count: unknownCount)
    var writerFill = writerCounts
    for node in 0..<unknownCount where problem.kind[knownCount + node] == .unknownWrite {
      let written = Int(problem.a[knownCount + node])
      writers[Int(writerFill[written])] = Int32(node)
      writerFill[written] += 1
    }
    writersStart = writerCounts
    self.writers = writers

    zobrist = (0..<knownCount).map { mix64(UInt64($0) &* 0x2545_F491_4F6C_DD1D ^ 0x5EED) }
    let unknownWords = (unknownCount + 63) / 64
    memo = Memo(unknownWords: unknownWords)
    knownSet = [UInt64](repeating: 0, count: (knownCount + 63) / 64)
    unknownKey = [UInt64](repeating: 0, count: unknownWords)
    unknownSpent = [Bool](repeating: false, count: unknownCount)
    wanted = [UInt32](repeating: 0, count: valueCount)
    failedCasExpects = wanted
    bestWriterStamp = wanted
    bestWriter = [Int32](repeating: 0, count: valueCount)
    frames.reserveCapacity(problem.count)
    value = canonical(0)
  }

  mutating func run() -> SearchVerdict {
    if knownCount == 0 { return .linearizable }
    if let unsatisfiable = unsatisfiableObserver() {
      return .notLinearizable(
        frontier: completedAt[unsatisfiable], culprit: unsatisfiable, longest: longest)
    }
    let clock = ContinuousClock()
    var iterations = 0
    cursor = next[Int(sentinel)]
    while true {
      iterations &+= 1
      if iterations & 0x3FFF == 0, let deadline = limits.deadline, clock.now >= deadline {
        return .exhausted("time limit reached after exploring \(memo.count) states")
      }
      if !inUnknownPhase {
        if cursor & 1 == 1 || cursor == sentinel {
          // The first return entry: every acknowledged candidate has been tried at this depth.
          beginUnknownPhase(firstReturn: cursor)
          inUnknownPhase = true
          uCursor = uNext[Int(firstSentinel)]
          continue
        }
        let op = Int(cursor >> 1)
        if kind[op] == .write && !isBestWriter(op) {
          cursor = next[Int(cursor)]
          continue
        }
        if let newValue = stepKnown(op) {
          // A read or failed compare-and-set that fits now leaves the value as it is, and any
          // completion of this configuration can be reordered to take it first; so it is taken
          // without trying the alternatives, and if that configuration was explored, so was this.
          let forced = kind[op] == .read || kind[op] == .casFailed
          if enterKnown(op, newValue: newValue, forced: forced) {
            if let reason = overBudget() { return .exhausted(reason) }
            unlinkKnown(op)
            linearizedKnown += 1
            if linearizedKnown == knownCount { return .linearizable }
            if recordLongest && linearizedKnown > longestKnown { recordLongestPrefix() }
            cursor = next[Int(sentinel)]
            writersStale = true
            continue
          }
          if forced {
            if !backtrack() {
              return .notLinearizable(frontier: frontier, culprit: culprit, longest: longest)
            }
            continue
          }
        }
        cursor = next[Int(cursor)]
        continue
      }
      if uCursor == firstSentinel {
        uCursor = uNext[Int(secondSentinel)]
        continue
      }
      if uCursor != secondSentinel {
        let node = Int(uCursor)
        let op = knownCount + node
        if invokedAt[op] > bound {
          // Each list is in invocation order, so the rest of this one is outside the window too.
          if inFirstList[node] {
            uCursor = uNext[Int(secondSentinel)]
            continue
          }
        } else {
          if isCanonical(node), let newValue = stepUnknown(op), isWanted(newValue),
            enterUnknown(node, newValue: newValue)
          {
            if let reason = overBudget() { return .exhausted(reason) }
            if consumesUnknown { unlinkUnknown(node) }
            inUnknownPhase = false
            cursor = next[Int(sentinel)]
            writersStale = true
          } else {
            uCursor = uNext[node]
          }
          continue
        }
      }
      // Nothing further can be linearized here.
      if !backtrack() { return .notLinearizable(frontier: frontier, culprit: culprit, longest: longest) }
    }
  }

  /// An operation that must observe a value nothing can produce before it completes, found without
  /// searching: otherwise a search has to exhaust everything before it to notice. (The initial value
  /// is excepted; leaving it is the abandonment check's business.)
  private mutating func unsatisfiableObserver() -> Int? {
    guard canonicalize else { return nil }
    for observed in 1..<observerCursor.count {
      guard let observer = firstPending(of: observed, producers: false, besides: -1) else { continue }
      guard let producer = firstPending(of: observed, producers: true, besides: -1),
        invokedAt[producer] <= completedAt[observer]
      else { return observer }
    }
    return nil
  }

  /// Undoes the last choice and positions the cursors on its successors, undoing forced steps
  /// (which have no alternatives) on the way; false when there is nothing left to undo.
  private mutating func backtrack() -> Bool {
    writersStale = true
    while let frame = frames.popLast() {
      let op = Int(frame.op)
      value = frame.previousValue
      owesObserver = frame.previousOwes
      low = frame.previousLow
      high = frame.previousHigh
      if op < knownCount {
        zobristHash ^= zobrist[op]
        knownSet[op >> 6] &= ~(1 << UInt64(op & 63))
        adjustPending(op, by: 1)
        relinkKnown(op)
        linearizedKnown -= 1
        if frame.forced { continue }
        inUnknownPhase = false
        cursor = next[2 * op]
      } else {
        let node = op - knownCount
        if consumesUnknown {
          markUnknown(node, spent: false)
          adjustPending(op, by: 1)
          relinkUnknown(node)
        }
        beginUnknownPhase(firstReturn: nil)
        inUnknownPhase = true
        uCursor = uNext[node]
      }
      return true
    }
    return false
  }

  /// `candidate`, or the dead value if nothing unlinearized mentions it any more.
  @inline(__always)
  private func canonical(_ candidate: Int32) -> Int32 {
    canonicalize && pendingMentions[Int(candidate)] == 0 ? dead : candidate
  }

  /// Whether `op`, an acknowledged write, is the one to try among the window's pending writes that
  /// leave the same (canonical) value: the one with the earliest deadline. Any completion that takes
  /// another first can swap the two, since they have the same effect and the earlier deadline goes
  /// to the earlier position; so trying the others only repeats work.
  @inline(__always)
  private mutating func isBestWriter(_ op: Int) -> Bool {
    if writersStale {
      writersStale = false
      writersGeneration &+= 1
      if writersGeneration == 0 {
        for index in bestWriterStamp.indices { bestWriterStamp[index] = 0 }
        writersGeneration = 1
      }
      var entry = next[Int(sentinel)]
      while entry != sentinel && entry & 1 == 0 {
        let writer = Int(entry >> 1)
        if kind[writer] == .write {
          let written = Int(canonical(a[writer]))
          if bestWriterStamp[written] != writersGeneration
            || completedAt[writer] < completedAt[Int(bestWriter[written])]
          {
            bestWriterStamp[written] = writersGeneration
            bestWriter[written] = Int32(writer)
          }
        }
        entry = next[Int(entry)]
      }
    }
    return bestWriter[Int(canonical(a[op]))] == Int32(op)
  }

  /// The register value after linearizing acknowledged operation `op` now, or nil if its response
  /// rules that out. Produced values are not yet canonical.
  @inline(__always)
  private func stepKnown(_ op: Int) -> Int32? {
    switch kind[op] {
    case .read: return value == a[op] ? value : nil
    case .write: return owesObserver ? nil : a[op]
    case .casSucceeded: return value == a[op] ? b[op] : nil
    case .casFailed: return value != a[op] ? value : nil
    case .unknownWrite, .unknownCas: preconditionFailure("unknown operation in the acknowledged list")
    }
  }

  @inline(__always)
  private func stepUnknown(_ op: Int) -> Int32? {
    switch kind[op] {
    case .unknownWrite: return !owesObserver && value != canonical(a[op]) ? a[op] : nil
    case .unknownCas: return value == a[op] && b[op] != a[op] ? b[op] : nil
    default: preconditionFailure("acknowledged operation in the unknown list")
    }
  }

  /// Whether an unknown operation producing `candidate` could be observed next. A failed
  /// compare-and-set observes any change away from its expected value, but only needs one when the
  /// register holds that value now; otherwise it could be linearized first, and the unknown operation
  /// after it.
  @inline(__always)
  private func isWanted(_ candidate: Int32) -> Bool {
    wanted[Int(candidate)] == generation || failedCasExpects[Int(value)] == generation
  }

  @inline(__always)
  private func isCanonical(_ node: Int) -> Bool {
    let id = Int(classOf[node])
    return classMembers[Int(classStart[id] + classPos[id])] == Int32(node)
  }

  /// Marks `op` linearized if the resulting configuration is not covered by an explored one;
  /// otherwise leaves everything as it was, since that configuration cannot lead anywhere new.
  @inline(__always)
  private mutating func enterKnown(_ op: Int, newValue: Int32, forced: Bool) -> Bool {
    if newValue != value && abandonsNeededValue(op) { return false }
    adjustPending(op, by: -1)
    let newValue = canonical(newValue)
    knownSet[op >> 6] |= 1 << UInt64(op & 63)
    zobristHash ^= zobrist[op]
    let previousLow = low
    let previousHigh = high
    if op == Int(low) {
      var scan = op + 1
      while scan < knownCount && knownSet[scan >> 6] & (1 << UInt64(scan & 63)) != 0 { scan += 1 }
      low = Int32(scan)
    }
    if Int32(op) > high { high = Int32(op) }
    if remember(newValue: newValue, owes: false) {
      frames.append(
        Frame(
          op: Int32(op), previousValue: value, previousOwes: owesObserver, previousLow: previousLow,
          previousHigh: previousHigh, forced: forced))
      value = newValue
      owesObserver = false
      return true
    }
    low = previousLow
    high = previousHigh
    knownSet[op >> 6] &= ~(1 << UInt64(op & 63))
    zobristHash ^= zobrist[op]
    adjustPending(op, by: 1)
    return false
  }

  @inline(__always)
  private mutating func enterUnknown(_ node: Int, newValue: Int32) -> Bool {
    let op = knownCount + node
    if newValue != value && abandonsNeededValue(op) { return false }
    if consumesUnknown {
      adjustPending(op, by: -1)
      markUnknown(node, spent: true)
    }
    let newValue = canonical(newValue)
    if remember(newValue: newValue, owes: true) {
      frames.append(
        Frame(
          op: Int32(op), previousValue: value, previousOwes: owesObserver, previousLow: low,
          previousHigh: high, forced: false))
      value = newValue
      owesObserver = true
      return true
    }
    if consumesUnknown {
      markUnknown(node, spent: false)
      adjustPending(op, by: 1)
    }
    return false
  }

  /// Whether linearizing `op` now, which changes the value, would doom the branch: some unlinearized
  /// operation must still observe the current value before it completes, and nothing unlinearized
  /// (besides `op`) that can produce the value again is invoked by then. Checking only the earliest
  /// such deadline against the earliest such producer suffices.
  @inline(__always)
  private mutating func abandonsNeededValue(_ op: Int) -> Bool {
    guard canonicalize && value != dead else { return false }
    let current = Int(value)
    guard let observer = firstPending(of: current, producers: false, besides: op) else { return false }
    guard let producer = firstPending(of: current, producers: true, besides: op) else { return true }
    return invokedAt[producer] > completedAt[observer]
  }

  /// The first unlinearized operation other than `besides` in a value's observer or producer list,
  /// moving the list's cursor past linearized ones on the way.
  @inline(__always)
  private mutating func firstPending(of value: Int, producers: Bool, besides: Int) -> Int? {
    let end = Int(producers ? producersStart[value + 1] : observersStart[value + 1])
    var index = Int(producers ? producerCursor[value] : observerCursor[value])
    while index < end
      && !isPending(Int(producers ? producersByInvocation[index] : observersByDeadline[index]))
    {
      index += 1
    }
    if producers { producerCursor[value] = Int32(index) } else { observerCursor[value] = Int32(index) }
    while index < end {
      let op = Int(producers ? producersByInvocation[index] : observersByDeadline[index])
      if op != besides && isPending(op) { return op }
      index += 1
    }
    return nil
  }

  @inline(__always)
  private func isPending(_ op: Int) -> Bool {
    if op < knownCount { return knownSet[op >> 6] & (1 << UInt64(op & 63)) == 0 }
    return !consumesUnknown || !unknownSpent[op - knownCount]
  }

  /// Counts `op` out of (-1) or back into (+1) the pending tallies. A value whose last mention goes
  /// turns the spent unknown writes of it into anonymous dead ones, and back on the way out. Counting
  /// back in means `op` is pending again, so the observer and producer cursors move back to it.
  @inline(__always)
  private mutating func adjustPending(_ op: Int, by delta: Int32) {
    if delta > 0 {
      // `op` is pending again: the cursors must not be past it.
      if observes[op] >= 0 {
        let observed = Int(observes[op])
        observerCursor[observed] = min(observerCursor[observed], observerPosition[op])
      }
      if produces[op] >= 0 {
        let produced = Int(produces[op])
        producerCursor[produced] = min(producerCursor[produced], producerPosition[op])
      }
    }
    let mentioned = Int(mentions[op])
    guard mentioned >= 0 else { return }
    if delta < 0 {
      pendingMentions[mentioned] += delta
      if pendingMentions[mentioned] == 0 && canonicalize { reclassifyWriters(of: mentioned, dying: true) }
    } else {
      if pendingMentions[mentioned] == 0 && canonicalize { reclassifyWriters(of: mentioned, dying: false) }
      pendingMentions[mentioned] += delta
    }
  }

  private mutating func reclassifyWriters(of written: Int, dying: Bool) {
    for index in Int(writersStart[written])..<Int(writersStart[written + 1]) {
      let node = Int(writers[index])
      guard unknownSpent[node] else { continue }
      if dying {
        unknownKey[node >> 6] &= ~(1 << UInt64(node & 63))
        deadSpent += 1
      } else {
        unknownKey[node >> 6] |= 1 << UInt64(node & 63)
        deadSpent -= 1
      }
    }
  }

  /// Records `node` as spent or not, in the memo key's terms. Whether a write counts as dead depends
  /// only on which acknowledged operations are linearized, so two configurations the memo compares
  /// classify every write alike.
  @inline(__always)
  private mutating func markUnknown(_ node: Int, spent: Bool) {
    unknownSpent[node] = spent
    let op = knownCount + node
    if canonicalize && kind[op] == .unknownWrite && pendingMentions[Int(a[op])] == 0 {
      deadSpent += spent ? 1 : -1
    } else if spent {
      unknownKey[node >> 6] |= 1 << UInt64(node & 63)
    } else {
      unknownKey[node >> 6] &= ~(1 << UInt64(node & 63))
    }
  }

  @inline(__always)
  private mutating func remember(newValue: Int32, owes: Bool) -> Bool {
    let tag = newValue &* 2 | (owes ? 1 : 0)
    let firstWord = Int(low) >> 6
    let span = high >= low ? Int(high) >> 6 - firstWord + 1 : 0
    return memo.insert(
      hash: zobristHash ^ mix64(UInt64(UInt32(bitPattern: tag))), tag: tag, low: low, known: knownSet,
      firstWord: firstWord, span: span, unknown: unknownKey, deadSpent: deadSpent)
  }

  private func overBudget() -> String? {
    if memo.count > limits.maxStates {
      return "state limit reached (\(limits.maxStates) configurations explored)"
    }
    if memo.storedBytes > limits.maxMemoryBytes {
      return "memory limit reached (\(memo.storedBytes >> 20) MiB of memoized configurations)"
    }
    return nil
  }

  /// Computes the window's bound and what its operations could observe. `firstReturn` is the first
  /// return entry when the caller already knows it.
  private mutating func beginUnknownPhase(firstReturn: Int32?) {
    if unknownCount == 0, let firstReturn {
      setBound(firstReturn)
      return
    }
    generation &+= 1
    if generation == 0 {
      for index in wanted.indices {
        wanted[index] = 0
        failedCasExpects[index] = 0
      }
      generation = 1
    }
    var entry = next[Int(sentinel)]
    while entry != sentinel && entry & 1 == 0 {
      let op = Int(entry >> 1)
      switch kind[op] {
      case .read, .casSucceeded: wanted[Int(a[op])] = generation
      case .casFailed: failedCasExpects[Int(a[op])] = generation
      default: break
      }
      entry = next[Int(entry)]
    }
    setBound(entry)
    for head in [firstSentinel, secondSentinel] {
      var node = uNext[Int(head)]
      while node != head && invokedAt[knownCount + Int(node)] <= bound {
        let op = knownCount + Int(node)
        if kind[op] == .unknownCas { wanted[Int(a[op])] = generation }
        node = uNext[Int(node)]
      }
    }
  }

  private mutating func setBound(_ firstReturn: Int32) {
    bound = firstReturn == sentinel ? UInt64.max : completedAt[Int(firstReturn >> 1)]
    if bound > frontier {
      frontier = bound
      culprit = Int(firstReturn >> 1)
    }
  }

  @inline(__always)
  private mutating func unlink(_ entry: Int) {
    next[Int(prev[entry])] = next[entry]
    prev[Int(next[entry])] = prev[entry]
  }

  @inline(__always)
  private mutating func relink(_ entry: Int) {
    next[Int(prev[entry])] = Int32(entry)
    prev[Int(next[entry])] = Int32(entry)
  }

  private mutating func unlinkKnown(_ op: Int) {
    unlink(2 * op)
    unlink(2 * op + 1)
  }

  private mutating func relinkKnown(_ op: Int) {
    relink(2 * op + 1)
    relink(2 * op)
  }

  private mutating func unlinkUnknown(_ node: Int) {
    uNext[Int(uPrev[node])] = uNext[node]
    uPrev[Int(uNext[node])] = uPrev[node]
    classPos[Int(classOf[node])] += 1
  }

  private mutating func relinkUnknown(_ node: Int) {
    uNext[Int(uPrev[node])] = Int32(node)
    uPrev[Int(uNext[node])] = Int32(node)
    classPos[Int(classOf[node])] -= 1
  }

  private mutating func recordLongestPrefix() {
    longestKnown = linearizedKnown
    longest.removeAll(keepingCapacity: true)
    for (index, frame) in frames.enumerated() {
      let after = index + 1 < frames.count ? frames[index + 1].previousValue : value
      longest.append(LinearizationStep(op: Int(frame.op), valueAfter: after))
    }
  }
}
