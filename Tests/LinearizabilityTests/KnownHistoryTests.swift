import Linearizability
import Testing

@Suite struct KnownHistoryTests {
  struct Case: Sendable, CustomTestStringConvertible {
    var name: String
    var history: History
    var testDescription: String { name }

    init(_ name: String, _ operations: [Operation]) {
      self.name = name
      history = Linearizability.History(
        operations.enumerated().map { index, operation in
          var numbered = operation
          numbered.id = index + 1
          return numbered
        })
    }
  }

  static let good: [Case] = [
    Case("empty history", []),
    Case("read of a never-written key is absent", [op(1, .read, 0, 1, saw(nil))]),
    Case(
      "sequential write, read, delete, read",
      [
        op(1, .write("a"), 0, 10, ok), op(2, .read, 20, 30, saw("a")),
        op(1, .delete, 40, 50, ok), op(2, .read, 60, 70, saw(nil)),
      ]),
    Case(
      "overlapping writes, reads observe the second",
      [
        op(1, .write("a"), 0, 100, ok), op(2, .write("b"), 10, 90, ok),
        op(3, .read, 120, 130, saw("b")), op(3, .read, 140, 150, saw("b")),
      ]),
    Case(
      "overlapping writes, reads observe the first",
      [
        op(1, .write("a"), 0, 100, ok), op(2, .write("b"), 10, 90, ok),
        op(3, .read, 120, 130, saw("a")),
      ]),
    Case(
      "reads concurrent with a write may see old then new",
      [
        op(1, .write("a"), 0, 10, ok), op(2, .write("b"), 20, 100, ok),
        op(3, .read, 30, 40, saw("a")), op(4, .read, 50, 60, saw("b")), op(3, .read, 70, 80, saw("b")),
      ]),
    Case(
      "operations that merely touch are concurrent",
      [op(1, .write("a"), 0, 10, ok), op(2, .read, 10, 20, saw(nil))]),
    Case(
      "cas chain",
      [
        op(1, .cas(expected: nil, new: "1"), 0, 10, swapped),
        op(2, .cas(expected: "1", new: "2"), 20, 30, swapped),
        op(3, .cas(expected: "1", new: "3"), 40, 50, notSwapped),
        op(1, .cas(expected: "2", new: "4"), 60, 70, swapped), op(2, .read, 80, 90, saw("4")),
      ]),
    Case(
      "concurrent cas from the same value: one wins",
      [
        op(1, .write("0"), 0, 5, ok),
        op(2, .cas(expected: "0", new: "a"), 10, 50, swapped),
        op(3, .cas(expected: "0", new: "b"), 10, 50, notSwapped), op(1, .read, 60, 70, saw("a")),
      ]),
    Case(
      "unknown write that took effect",
      [
        op(1, .write("a"), 0, 10, ok), op(2, .write("b"), 20, 30, .unknown),
        op(3, .read, 40, 50, saw("b")),
      ]),
    Case(
      "unknown write that did not take effect",
      [
        op(1, .write("a"), 0, 10, ok), op(2, .write("b"), 20, 30, .unknown),
        op(3, .read, 40, 50, saw("a")), op(3, .read, 60, 70, saw("a")),
      ]),
    Case(
      "unknown write taking effect long after the client gave up",
      [
        op(1, .write("a"), 0, 10, ok), op(2, .write("b"), 20, 30, .unknown),
        op(3, .read, 40, 50, saw("a")), op(3, .read, 1000, 1010, saw("b")),
      ]),
    Case(
      "unknown delete that took effect",
      [
        op(1, .write("a"), 0, 10, ok), op(2, .delete, 20, nil, .unknown),
        op(3, .read, 40, 50, saw(nil)),
      ]),
    Case(
      "unknown cas that took effect after an unknown write",
      [
        op(1, .write("a"), 0, 10, .unknown), op(2, .cas(expected: "a", new: "b"), 20, nil, .unknown),
        op(3, .read, 40, 50, saw("b")),
      ]),
    Case(
      "identical unknown writes, one per observation",
      [
        op(1, .write("a"), 0, nil, .unknown), op(2, .write("a"), 1, nil, .unknown),
        op(3, .write("b"), 10, 20, ok), op(3, .read, 30, 40, saw("a")),
        op(3, .write("b"), 50, 60, ok), op(3, .read, 70, 80, saw("a")),
      ]),
    Case(
      "an unknown write of a value nobody reads can make a later cas fail",
      [
        op(1, .cas(expected: nil, new: "a"), 1, 4, swapped), op(2, .delete, 3, 3, ok),
        op(3, .write("a"), 14, nil, .unknown), op(4, .cas(expected: "a", new: "b"), 14, 17, swapped),
        op(4, .cas(expected: "b", new: "b"), 20, 23, notSwapped),
      ]),
    Case(
      "two unknown writes of unread values, each used once to fail a cas",
      [
        op(1, .write("a"), 0, 1, ok), op(2, .write("z1"), 0, nil, .unknown),
        op(3, .write("z2"), 0, nil, .unknown),
        op(1, .cas(expected: "a", new: "q"), 2, 3, notSwapped), op(1, .write("a"), 4, 5, ok),
        op(1, .cas(expected: "a", new: "q"), 6, 7, notSwapped),
      ]),
    Case(
      "failed operations are ignored",
      [
        op(1, .write("a"), 0, 10, ok), op(2, .write("b"), 20, 30, .failed),
        op(3, .read, 40, 50, saw("a")),
      ]),
    Case(
      "unknown reads are ignored",
      [op(1, .write("a"), 0, 10, ok), op(2, .read, 20, 30, .unknown), op(3, .read, 40, 50, saw("a"))]),
    Case(
      "keys are independent",
      [
        op(1, .write("a"), 0, 10, ok, key: "x"), op(2, .write("b"), 0, 10, ok, key: "y"),
        op(3, .read, 20, 30, saw("a"), key: "x"), op(3, .read, 20, 30, saw("b"), key: "y"),
        op(3, .read, 40, 50, saw(nil), key: "z"),
      ]),
  ]

  static let bad: [Case] = [
    Case(
      "stale read after a completed write",
      [op(1, .write("a"), 0, 10, ok), op(1, .write("b"), 20, 30, ok), op(2, .read, 40, 50, saw("a"))]),
    Case(
      "read of a value never written",
      [op(1, .write("a"), 0, 10, ok), op(2, .read, 5, 50, saw("zzz"))]),
    Case(
      "read of absent after a completed write",
      [op(1, .write("a"), 0, 10, ok), op(2, .read, 20, 30, saw(nil))]),
    Case(
      "two cas succeed from the same expected value",
      [
        op(1, .write("0"), 0, 5, ok),
        op(2, .cas(expected: "0", new: "a"), 10, 50, swapped),
        op(3, .cas(expected: "0", new: "b"), 10, 50, swapped),
      ]),
    Case(
      "cas fails although the expected value is there",
      [op(1, .write("0"), 0, 5, ok), op(2, .cas(expected: "0", new: "a"), 10, 20, notSwapped)]),
    Case(
      "old value read after a later non-overlapping read saw the new one",
      [
        op(1, .write("a"), 0, 10, ok), op(2, .write("b"), 20, 200, ok),
        op(3, .read, 30, 40, saw("b")), op(4, .read, 50, 60, saw("a")),
      ]),
    Case(
      "lost acknowledged write",
      [
        op(1, .write("a"), 0, 10, ok), op(2, .write("b"), 20, 30, ok),
        op(3, .read, 40, 50, saw("a")), op(3, .read, 60, 70, saw("a")),
      ]),
    Case(
      "unknown write would have to take effect twice",
      [
        op(1, .write("a"), 0, nil, .unknown), op(2, .write("b"), 10, 20, ok),
        op(3, .read, 30, 40, saw("a")), op(2, .write("b"), 50, 60, ok), op(3, .read, 70, 80, saw("a")),
      ]),
    Case(
      "one unknown write of an unread value cannot fail two cas",
      [
        op(1, .write("a"), 0, 1, ok), op(2, .write("z"), 0, nil, .unknown),
        op(1, .cas(expected: "a", new: "q"), 2, 3, notSwapped), op(1, .write("a"), 4, 5, ok),
        op(1, .cas(expected: "a", new: "q"), 6, 7, notSwapped),
      ]),
    Case(
      "unknown write cannot take effect before it was invoked",
      [op(1, .read, 0, 10, saw("a")), op(2, .write("a"), 20, nil, .unknown)]),
    Case(
      "delete observed before it happened",
      [
        op(1, .write("a"), 0, 10, ok), op(2, .read, 20, 30, saw(nil)), op(3, .delete, 40, 50, ok),
      ]),
    Case(
      "byte-different but canonically equal strings are different values",
      [op(1, .write("caf\u{E9}"), 0, 10, ok), op(2, .read, 20, 30, saw("cafe\u{301}"))]),
  ]

  @Test(arguments: good)
  func linearizable(_ testCase: Case) {
    let result = LinearizabilityChecker().check(testCase.history)
    #expect(result.isLinearizable, "\(result)")
    #expect(LinearizabilityChecker(relaxedPrecheck: false).check(testCase.history).isLinearizable)
    #expect(BruteForce.isLinearizable(testCase.history) || testCase.history.operations.count > 16)
  }

  @Test(arguments: bad)
  func notLinearizable(_ testCase: Case) throws {
    let result = LinearizabilityChecker().check(testCase.history)
    guard case .notLinearizable(let key, let minimal, let explanation) = result else {
      Issue.record("expected a violation, got \(result)")
      return
    }
    #expect(key == "x")
    #expect(!minimal.isEmpty && minimal.count <= testCase.history.operations.count)
    let exact = LinearizabilityChecker(relaxedPrecheck: false).check(testCase.history)
    guard case .notLinearizable = exact else {
      Issue.record("the exact search alone says \(exact)")
      return
    }
    #expect(!BruteForce.isLinearizable(History(minimal)))
    #expect(explanation.contains("Key \"x\""))
  }

  @Test func violationOnOneKeyIsReportedForThatKey() throws {
    let input = history([
      op(1, .write("a"), 0, 10, ok, key: "x"), op(2, .read, 20, 30, saw("a"), key: "x"),
      op(1, .write("b"), 0, 10, ok, key: "y"), op(2, .read, 20, 30, saw("a"), key: "y"),
    ])
    guard case .notLinearizable(let key, let minimal, _) = LinearizabilityChecker().check(input) else {
      Issue.record("expected a violation")
      return
    }
    #expect(key == "y")
    #expect(minimal.allSatisfy { $0.key == "y" })
  }

  @Test func exhaustedBudgetIsUnknownNotLinearizable() {
    // Many concurrent writes and reads force the search through more than one configuration.
    var operations: [Operation] = []
    for index in 0..<12 {
      operations.append(op(index, .write("v\(index)"), 0, 100, ok))
      operations.append(op(index + 100, .read, 0, 100, saw("v\((index * 7) % 12)")))
    }
    let checker = LinearizabilityChecker(maxStates: 3)
    let result = checker.check(history(operations))
    guard case .unknown(let reason) = result else {
      Issue.record("expected unknown, got \(result)")
      return
    }
    #expect(reason.contains("state limit"))
    #expect(LinearizabilityChecker().check(history(operations)).isLinearizable)
  }

  @Test func malformedHistoriesAreRefused() {
    let input = history([
      op(1, .write("a"), 0, nil, ok), op(2, .read, 20, 10, saw("a")), op(3, .read, 0, 5, swapped),
    ])
    guard case .unknown(let reason) = LinearizabilityChecker().check(input) else {
      Issue.record("expected unknown")
      return
    }
    #expect(reason.contains("#1") && reason.contains("#2") && reason.contains("#3"))
  }

  @Test func explanationRendersTheOperations() throws {
    let input = history([
      op(1, .write("a"), 1_000_000, 2_000_000, ok), op(1, .write("b"), 3_000_000, 4_000_000, ok),
      op(2, .read, 5_000_000, 6_500_000, saw("a")), op(7, .write("c"), 5_000_000, nil, .unknown),
    ])
    let result = LinearizabilityChecker().check(input)
    guard case .notLinearizable(_, _, let explanation) = result else {
      Issue.record("expected a violation, got \(result)")
      return
    }
    print(result)
    #expect(explanation.contains("[+0.000ms, +1.000ms]"))
    #expect(explanation.contains("read => \"a\""))
    #expect(explanation.contains("[+4.000ms, +5.500ms]"))
  }
}
