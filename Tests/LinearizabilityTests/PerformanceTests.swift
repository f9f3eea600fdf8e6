import Linearizability
import Testing

/// Prints timings rather than asserting them, since machines differ; run with `-c release` for the
/// numbers that matter. The verdicts are asserted.
@Suite(.serialized) struct PerformanceTests {
  struct Shape: Sendable, CustomTestStringConvertible {
    var keys: Int
    var processes: Int
    var unknownProbability: Double
    var testDescription: String { "\(keys) keys, \(processes) processes" }
  }

  /// Ways to break a history: a late read of a value never written, a read in the middle of a value
  /// overwritten long before, and a compare-and-set in the middle reporting the opposite outcome.
  enum Corruption: CaseIterable {
    case readNeverWritten
    case staleRead
    case flippedCas

    func apply(to history: inout History) {
      let operations = history.operations
      let reads = operations.indices.filter {
        operations[$0].call == .read && operations[$0].outcome != .unknown
          && operations[$0].outcome != .failed
      }
      switch self {
      case .readNeverWritten:
        history.operations[reads.last!].outcome = saw("never written")
      case .staleRead:
        let index = reads[reads.count / 2]
        let key = operations[index].key
        for operation in operations where operation.key == key {
          guard case .write(let value) = operation.call, case .ok = operation.outcome else { continue }
          history.operations[index].outcome = saw(value)
          return
        }
      case .flippedCas:
        let swaps = operations.indices.filter {
          if case .ok(.cas) = operations[$0].outcome { return true }
          return false
        }
        let index = swaps[swaps.count / 2]
        if case .ok(.cas(let succeeded)) = operations[index].outcome {
          history.operations[index].outcome = .ok(.cas(succeeded: !succeeded))
        }
      }
    }
  }

  @Test(arguments: [
    Shape(keys: 5, processes: 20, unknownProbability: 0.02),
    Shape(keys: 10, processes: 20, unknownProbability: 0.015),
    Shape(keys: 20, processes: 30, unknownProbability: 0.015),
    Shape(keys: 1, processes: 50, unknownProbability: 0.02),
  ])
  func twentyThousandOperations(_ shape: Shape) {
    var rng = SeededGenerator(seed: 2024)
    // Nanosecond times: a request takes up to 5 ms, and an unknown one may land up to 2 s later.
    let generator = HistoryGenerator(
      processes: shape.processes, keys: (0..<shape.keys).map { "key\($0)" }, operations: 20_000,
      values: [], unknownProbability: shape.unknownProbability, failedProbability: 0.01,
      perturbation: 0, maxGap: 2_000_000, maxDuration: 5_000_000, unknownReach: 2_000_000_000,
      uniqueValues: true)
    let input = generator.generate(using: &rng).history
    let unknown = input.operations.filter { $0.outcome == .unknown }.count
    let start = ContinuousClock.now
    let result = LinearizabilityChecker().check(input)
    var report =
      "perf: 20000 operations (\(unknown) unknown), \(shape.testDescription): "
      + "linearizable \(milliseconds(since: start))"
    #expect(result.isLinearizable, "\(result)")

    for corruption in Corruption.allCases {
      var broken = input
      corruption.apply(to: &broken)
      let brokenStart = ContinuousClock.now
      let brokenResult = LinearizabilityChecker().check(broken)
      guard case .notLinearizable(_, let minimal, _) = brokenResult else {
        Issue.record("\(corruption): expected a violation, got \(brokenResult)")
        continue
      }
      report += "; \(corruption) found and shrunk to \(minimal.count) in \(milliseconds(since: brokenStart))"
    }
    print(report)
  }
}
