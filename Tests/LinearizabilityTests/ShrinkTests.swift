import Linearizability
import Testing

@Suite struct ShrinkTests {
  /// A long, busy, linearizable history with one stale read planted in the middle: the shrunk history
  /// must still fail (by brute force, independent of the checker) and be far smaller.
  @Test func shrinksAPlantedViolationInALongHistory() throws {
    var rng = SeededGenerator(seed: 7)
    let generator = HistoryGenerator(
      processes: 6, keys: ["x"], operations: 600, values: [], unknownProbability: 0.05,
      failedProbability: 0.02, perturbation: 0, maxGap: 10, maxDuration: 30, unknownReach: 300,
      uniqueValues: true)
    var input = generator.generate(using: &rng).history
    #expect(LinearizabilityChecker().check(input).isLinearizable)
    // Plant a read, after everything else, of a value that was overwritten long ago.
    let end = input.operations.compactMap(\.completedAt).max()! + 100
    input.append(
      Operation(
        id: 10_000, process: 99, key: "x", call: .write("planted"), invokedAt: end, completedAt: end + 5,
        outcome: ok))
    input.append(
      Operation(
        id: 10_001, process: 99, key: "x", call: .read, invokedAt: end + 10, completedAt: end + 15,
        outcome: saw("v1")))
    let result = LinearizabilityChecker().check(input)
    guard case .notLinearizable(let key, let minimal, let explanation) = result else {
      Issue.record("expected a violation, got \(result)")
      return
    }
    print("shrunk \(input.operations.count) operations to \(minimal.count):\n\(explanation)")
    #expect(key == "x")
    try #require(minimal.count <= 4)
    #expect(minimal.contains { $0.id == 10_001 })
    #expect(!BruteForce.isLinearizable(History(minimal)))
  }

  @Test func shrinkingRandomViolationsKeepsThemFailing() {
    var rng = SeededGenerator(seed: 11)
    let generator = HistoryGenerator(
      processes: 5, keys: ["x"], operations: 14, values: ["a", "b", "c"], unknownProbability: 0.2,
      failedProbability: 0.05, perturbation: 1, maxGap: 4, maxDuration: 10, unknownReach: 40)
    let checker = LinearizabilityChecker()
    var shrunk = 0
    var removed = 0
    for _ in 0..<300 {
      let input = generator.generate(using: &rng).history
      guard case .notLinearizable(_, let minimal, _) = checker.check(input) else { continue }
      shrunk += 1
      removed += input.operations.count - minimal.count
      #expect(minimal.count <= input.operations.count)
      #expect(checker.verdict(forKeyOperations: minimal) == .notLinearizable)
      #expect(!BruteForce.isLinearizable(History(minimal)))
      // Shrinking never removes the write a read may have seen: if the input has a write of the
      // value that could precede the read, so does the shrunk history.
      func writes(_ value: String, before read: Operation, in operations: [Operation]) -> Bool {
        operations.contains { other in
          guard other.invokedAt <= read.completedAt! else { return false }
          switch (other.call, other.outcome) {
          case (.write(let written), .ok), (.write(let written), .unknown): return written == value
          case (.cas(_, let written), .ok(.cas(true))), (.cas(_, let written), .unknown):
            return written == value
          default: return false
          }
        }
      }
      for operation in minimal {
        guard case .ok(.value(let seen?)) = operation.outcome,
          writes(seen, before: operation, in: input.operations)
        else { continue }
        #expect(
          writes(seen, before: operation, in: minimal), "shrinking orphaned the read #\(operation.id)")
      }
    }
    print("shrank \(shrunk) random violations, removing \(removed) operations in total")
    #expect(shrunk > 50)
  }

  /// What makes a shrunk history a genuine witness: removing operations with their dependents never
  /// turns a linearizable history into a non-linearizable one. Plain removal does, often.
  @Test func removingWithDependentsKeepsLinearizableHistoriesLinearizable() {
    var rng = SeededGenerator(seed: 13)
    let generator = HistoryGenerator(
      processes: 5, keys: ["x"], operations: 14, values: ["a", "b", "c"], unknownProbability: 0.25,
      failedProbability: 0.05, perturbation: 0, maxGap: 4, maxDuration: 10, unknownReach: 40)
    var plainRemovalBroke = 0
    for index in 0..<1500 {
      let input = generator.generate(using: &rng).history
      guard BruteForce.isLinearizable(input) else {
        Issue.record("generator produced a non-linearizable history")
        continue
      }
      let ids = input.operations.map(\.id)
      let removed = Set(ids.filter { _ in rng.chance(0.25) })
      let kept = LinearizabilityChecker.removing(removed, withDependentsFrom: input.operations)
      #expect(kept.allSatisfy { !removed.contains($0.id) })
      if !BruteForce.isLinearizable(History(kept)) {
        Issue.record("#\(index): removing \(removed.sorted()) with dependents broke\n\(input.encoded())")
      }
      if !BruteForce.isLinearizable(History(input.operations.filter { !removed.contains($0.id) })) {
        plainRemovalBroke += 1
      }
    }
    print("plain removal made \(plainRemovalBroke) of 1500 linearizable histories non-linearizable")
    #expect(plainRemovalBroke > 0)
  }

  @Test func shrinkReturnsInputWhenItIsNotShownToFail() {
    let input = [op(1, .write("a"), 0, 10, ok), op(2, .read, 20, 30, saw("a"))]
    #expect(LinearizabilityChecker().shrink(input) == input)
  }
}
