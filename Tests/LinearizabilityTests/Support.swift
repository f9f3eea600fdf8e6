import Linearizability
import Raft

let ok = Outcome.ok(.done)
let swapped = Outcome.ok(.cas(succeeded: true))
let notSwapped = Outcome.ok(.cas(succeeded: false))

func saw(_ value: String?) -> Outcome { .ok(.value(value)) }

/// An operation without an id; `history` numbers them in order. Unknown outcomes get no completion
/// time unless one is given, since the checker ignores it anyway.
func op(
  _ process: Int, _ call: Call, _ start: UInt64, _ end: UInt64?, _ outcome: Outcome, key: String = "x"
) -> Operation {
  Operation(
    id: 0, process: process, key: key, call: call, invokedAt: start, completedAt: end, outcome: outcome)
}

func history(_ operations: [Operation]) -> History {
  History(
    operations.enumerated().map { index, operation in
      var numbered = operation
      numbered.id = index + 1
      return numbered
    })
}

/// Deterministic, seedable generator so that failures can be reproduced from a seed (the core's
/// SplitMix64; the Linearizability module itself depends on nothing).
typealias SeededGenerator = SplitMix64

extension SplitMix64 {
  mutating func chance(_ probability: Double) -> Bool {
    Double.random(in: 0..<1, using: &self) < probability
  }
}

/// Checks by definition, for cross-checking: depth-first over every order of every subset of the
/// operations that contains all acknowledged ones and respects real-time order, simulating a map of
/// registers. It shares no code or reductions with the checker; the only help it gets is remembering
/// (placed operations, register values) pairs that already failed, which cannot change the answer.
enum BruteForce {
  struct Configuration: Hashable {
    var placed: UInt32
    var values: [String?]
  }

  static func isLinearizable(_ history: History) -> Bool {
    let operations = history.operations.filter { $0.outcome != .failed }
    let count = operations.count
    precondition(count <= 32)
    let keys = Array(Set(operations.map(\.key)))
    let keyIndex = operations.map { operation in keys.firstIndex(of: operation.key)! }
    var mustFollow = [UInt32](repeating: 0, count: count)
    var known: UInt32 = 0
    for (j, earlier) in operations.enumerated() {
      guard case .ok = earlier.outcome else { continue }
      known |= 1 << UInt32(j)
      for (i, later) in operations.enumerated() where earlier.completedAt! < later.invokedAt {
        mustFollow[i] |= 1 << UInt32(j)
      }
    }
    var values = [String?](repeating: nil, count: keys.count)
    var failed = Set<Configuration>()

    func search(_ placed: UInt32) -> Bool {
      if placed & known == known { return true }
      if failed.contains(Configuration(placed: placed, values: values)) { return false }
      for i in 0..<count where placed & (1 << UInt32(i)) == 0 && mustFollow[i] & ~placed == 0 {
        let operation = operations[i]
        let before = values[keyIndex[i]]
        var after = before
        switch (operation.call, operation.outcome) {
        case (.read, .ok(.value(let observed))):
          if before != observed { continue }
        case (.read, _):
          break
        case (.write(let value), _):
          after = value
        case (.delete, _):
          after = nil
        case (.cas(let expected, let new), .ok(.cas(let succeeded))):
          if (before == expected) != succeeded { continue }
          if succeeded { after = new }
        case (.cas(let expected, let new), _):
          if before == expected { after = new }
        }
        values[keyIndex[i]] = after
        if search(placed | 1 << UInt32(i)) { return true }
        values[keyIndex[i]] = before
      }
      failed.insert(Configuration(placed: placed, values: values))
      return false
    }
    return search(0)
  }
}

/// Histories produced by simulating a correct register: every operation that takes effect gets a
/// linearization point inside its interval (or, for unknown outcomes, anywhere after invocation), and
/// results come from applying them in that order. Unperturbed, such a history is linearizable by
/// construction; `perturbation` then corrupts a few results so that violations occur too.
struct HistoryGenerator {
  var processes: Int
  var keys: [String]
  var operations: Int
  var values: [String]
  var unknownProbability: Double
  var failedProbability: Double
  var perturbation: Double
  /// Maximum gap between a process's operations, and maximum duration of one.
  var maxGap: UInt64
  var maxDuration: UInt64
  /// How long after invocation an unknown operation may still take effect.
  var unknownReach: UInt64
  /// Values are drawn from `values`, or made unique per write when this is set (as a real workload
  /// does, and as makes reads informative).
  var uniqueValues = false
  /// Fractions of reads, writes and deletes; the rest are compare-and-sets.
  var mix: (read: Double, write: Double, delete: Double) = (0.4, 0.25, 0.1)

  func generate(using rng: inout SeededGenerator) -> (history: History, perturbed: Bool) {
    var free = [UInt64](repeating: 0, count: processes)
    var operationsOut: [Operation] = []
    var points: [(point: UInt64, tiebreak: UInt64, index: Int)] = []
    var counter = 0
    var recentByKey: [String: [String]] = [:]
    for index in 0..<operations {
      let process = Int.random(in: 0..<processes, using: &rng)
      let key = keys.randomElement(using: &rng)!
      let start = free[process] + UInt64.random(in: 0...maxGap, using: &rng)
      let end = start + UInt64.random(in: 0...maxDuration, using: &rng)
      free[process] = end
      func value() -> String {
        if uniqueValues {
          counter += 1
          return "v\(counter)"
        }
        return values.randomElement(using: &rng)!
      }
      let call: Call
      let roll = Double.random(in: 0..<1, using: &rng)
      if roll < mix.read {
        call = .read
      } else if roll < mix.read + mix.write {
        let written = value()
        recentByKey[key, default: []].append(written)
        call = .write(written)
      } else if roll < mix.read + mix.write + mix.delete {
        call = .delete
      } else {
        let recent = recentByKey[key, default: []].suffix(3)
        let expected: String? =
          rng.chance(0.2) || recent.isEmpty ? nil : recent.randomElement(using: &rng)
        let new = value()
        recentByKey[key, default: []].append(new)
        call = .cas(expected: expected, new: new)
      }
      let outcome: Outcome
      if rng.chance(unknownProbability) {
        outcome = .unknown
        if rng.chance(0.5) {
          points.append((start + UInt64.random(in: 0...unknownReach, using: &rng), rng.next(), index))
        }
      } else if rng.chance(failedProbability) {
        outcome = .failed
      } else {
        outcome = ok  // results filled in below
        points.append((UInt64.random(in: start...end, using: &rng), rng.next(), index))
      }
      operationsOut.append(
        Operation(
          id: index + 1, process: process, key: key, call: call, invokedAt: start,
          completedAt: outcome == .unknown && rng.chance(0.5) ? nil : end, outcome: outcome))
    }
    points.sort { ($0.point, $0.tiebreak) < ($1.point, $1.tiebreak) }
    var state: [String: String] = [:]
    for (_, _, index) in points {
      let operation = operationsOut[index]
      let before = state[operation.key]
      let isKnown = operation.outcome != .unknown
      switch operation.call {
      case .read:
        if isKnown { operationsOut[index].outcome = .ok(.value(before)) }
      case .write(let value):
        state[operation.key] = value
      case .delete:
        state[operation.key] = nil
      case .cas(let expected, let new):
        let succeeded = before == expected
        if succeeded { state[operation.key] = new }
        if isKnown { operationsOut[index].outcome = .ok(.cas(succeeded: succeeded)) }
      }
    }
    var perturbed = false
    if rng.chance(perturbation) {
      let candidates = operationsOut.indices.filter {
        switch (operationsOut[$0].call, operationsOut[$0].outcome) {
        case (.read, .ok), (.cas, .ok): return true
        default: return false
        }
      }
      if let index = candidates.randomElement(using: &rng) {
        perturbed = true
        switch operationsOut[index].outcome {
        case .ok(.value):
          let pool: [String?] = [nil] + values + (recentByKey[operationsOut[index].key] ?? []).map { $0 }
          operationsOut[index].outcome = .ok(.value(pool.randomElement(using: &rng)!))
        case .ok(.cas(let succeeded)):
          operationsOut[index].outcome = .ok(.cas(succeeded: !succeeded))
        default:
          break
        }
      }
    }
    return (History(operationsOut), perturbed)
  }
}

/// Milliseconds since `start`, with a few digits, without Foundation.
func milliseconds(since start: ContinuousClock.Instant) -> String {
  let elapsed = ContinuousClock.now - start
  let micros = elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000
  return
    "\(micros / 1000).\(String(repeating: "0", count: 3 - String(micros % 1000).count))\(micros % 1000) ms"
}
