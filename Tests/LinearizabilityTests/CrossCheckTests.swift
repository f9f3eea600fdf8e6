import Linearizability
import Testing

/// The checker's pruning (just-in-time linearization, memoization, and the reductions for unknown
/// outcomes) must never change a verdict; comparing with the definition on many small random
/// histories is what would catch an unsound reduction.
@Suite struct CrossCheckTests {
  struct Batch: Sendable, CustomTestStringConvertible {
    var name: String
    var seed: UInt64
    var count: Int
    var generator: HistoryGenerator
    var testDescription: String { name }
  }

  static let batches: [Batch] = [
    Batch(
      name: "1-2 keys, up to 7 operations, small value pool", seed: 1, count: 4000,
      generator: HistoryGenerator(
        processes: 4, keys: ["x", "y"], operations: 7, values: ["a", "b"], unknownProbability: 0.2,
        failedProbability: 0.05, perturbation: 0.5, maxGap: 3, maxDuration: 6, unknownReach: 20)),
    Batch(
      name: "1 key, up to 7 operations, many unknown outcomes", seed: 2, count: 4000,
      generator: HistoryGenerator(
        processes: 3, keys: ["x"], operations: 7, values: ["a", "b", "c"], unknownProbability: 0.4,
        failedProbability: 0.05, perturbation: 0.5, maxGap: 2, maxDuration: 8, unknownReach: 30)),
    Batch(
      name: "1 key, up to 16 operations, many unknown outcomes", seed: 4, count: 2000,
      generator: HistoryGenerator(
        processes: 5, keys: ["x"], operations: 16, values: ["a", "b", "c"], unknownProbability: 0.3,
        failedProbability: 0.05, perturbation: 0.5, maxGap: 3, maxDuration: 10, unknownReach: 60)),
    Batch(
      name: "2 keys, up to 20 operations, unique values", seed: 5, count: 2000,
      generator: HistoryGenerator(
        processes: 6, keys: ["x", "y"], operations: 20, values: ["a"], unknownProbability: 0.2,
        failedProbability: 0.05, perturbation: 0.5, maxGap: 3, maxDuration: 10, unknownReach: 60,
        uniqueValues: true)),
    Batch(
      name: "1 key, up to 14 operations, mostly compare-and-set, few reads", seed: 6, count: 3000,
      generator: HistoryGenerator(
        processes: 5, keys: ["x"], operations: 14, values: ["a"], unknownProbability: 0.35,
        failedProbability: 0.05, perturbation: 0.5, maxGap: 3, maxDuration: 10, unknownReach: 60,
        uniqueValues: true, mix: (read: 0.1, write: 0.3, delete: 0.05))),
    Batch(
      name: "2 keys, unique values, highly concurrent", seed: 3, count: 4000,
      generator: HistoryGenerator(
        processes: 4, keys: ["x", "y"], operations: 7, values: ["a"], unknownProbability: 0.25,
        failedProbability: 0.05, perturbation: 0.5, maxGap: 1, maxDuration: 12, unknownReach: 30,
        uniqueValues: true)),
  ]

  @Test(arguments: batches)
  func agreesWithBruteForce(_ batch: Batch) {
    var rng = SeededGenerator(seed: batch.seed)
    var linearizable = 0
    var violations = 0
    var disagreements = 0
    let checker = LinearizabilityChecker()
    // The exact search alone, which the relaxed pre-check would otherwise spare most violations.
    let exactOnly = LinearizabilityChecker(relaxedPrecheck: false)
    for index in 0..<batch.count {
      var generator = batch.generator
      generator.processes = Int.random(in: 2...batch.generator.processes, using: &rng)
      // Small batches say "up to 7 operations"; the larger ones vary from half their size up.
      let most = batch.generator.operations
      generator.operations = Int.random(in: (most <= 7 ? 1 : most / 2)...most, using: &rng)
      generator.keys = Array(batch.generator.keys.prefix(Int.random(in: 1...2, using: &rng)))
      let (history, perturbed) = generator.generate(using: &rng)
      let expected = BruteForce.isLinearizable(history)
      let result = checker.check(history)
      if expected { linearizable += 1 } else { violations += 1 }
      let exactResult = exactOnly.check(history)
      if exactResult.isLinearizable != expected || exactResult.isUnknown {
        disagreements += 1
        Issue.record("#\(index): exact search alone says \(exactResult)\n\(history.encoded())")
      }
      if !perturbed && !expected {
        Issue.record("generator produced a non-linearizable unperturbed history #\(index)")
      }
      switch result {
      case .linearizable where expected:
        continue
      case .notLinearizable(_, let minimal, _) where !expected:
        // The shrunk history must still fail, by the definition, and be no larger.
        let relevant = history.operations.filter { $0.outcome != .failed }
        #expect(minimal.count <= relevant.count)
        #expect(minimal.allSatisfy { history.operations.contains($0) })
        if BruteForce.isLinearizable(History(minimal)) {
          Issue.record("shrunk history of #\(index) is linearizable:\n\(History.render(minimal))")
        }
      default:
        disagreements += 1
        if disagreements <= 3 {
          Issue.record(
            "#\(index): brute force says \(expected), checker says \(result)\n\(history.encoded())")
        }
      }
    }
    print(
      "cross-check \(batch.name): \(batch.count) histories, \(linearizable) linearizable, "
        + "\(violations) not linearizable, \(disagreements) disagreements")
    #expect(disagreements == 0)
    #expect(linearizable > batch.count / 5 && violations > batch.count / 5)
  }

  /// Every history drawn with its own shape (processes, size, value pool or unique values, mix of
  /// calls, timing, share of unknown outcomes), since the reductions interact in ways a fixed shape
  /// may never reach. Wrong counting of spent unknown writes, for one, shows up only here.
  @Test func agreesWithBruteForceOnRandomShapes() {
    var rng = SeededGenerator(seed: 42)
    let checkers = [LinearizabilityChecker(), LinearizabilityChecker(relaxedPrecheck: false)]
    var linearizable = 0
    var violations = 0
    var disagreements = 0
    let count = 8000
    for index in 0..<count {
      var generator = HistoryGenerator(
        processes: Int.random(in: 2...6, using: &rng), keys: rng.chance(0.7) ? ["x"] : ["x", "y"],
        operations: Int.random(in: 4...18, using: &rng),
        values: Array(["a", "b", "c"].prefix(Int.random(in: 1...3, using: &rng))),
        unknownProbability: Double.random(in: 0...0.5, using: &rng), failedProbability: 0.05,
        perturbation: 0.6, maxGap: UInt64.random(in: 0...5, using: &rng),
        maxDuration: UInt64.random(in: 1...15, using: &rng),
        unknownReach: UInt64.random(in: 1...80, using: &rng), uniqueValues: rng.chance(0.5))
      let reads = Double.random(in: 0...0.6, using: &rng)
      let writes = Double.random(in: 0...(1 - reads), using: &rng)
      generator.mix = (reads, writes, Double.random(in: 0...(1 - reads - writes) / 2, using: &rng))
      let history = generator.generate(using: &rng).history
      let expected = BruteForce.isLinearizable(history)
      if expected { linearizable += 1 } else { violations += 1 }
      for checker in checkers {
        let result = checker.check(history)
        if result.isLinearizable != expected || result.isUnknown {
          disagreements += 1
          if disagreements <= 3 {
            let message =
              "#\(index) (precheck \(checker.relaxedPrecheck)): brute force says \(expected), checker "
              + "says \(result)\n\(history.encoded())"
            Issue.record(Comment(rawValue: message))
          }
        }
      }
    }
    print(
      "cross-check random shapes: \(count) histories, \(linearizable) linearizable, \(violations) not "
        + "linearizable, \(disagreements) disagreements")
    #expect(disagreements == 0)
    #expect(linearizable > count / 5 && violations > count / 5)
  }
}
