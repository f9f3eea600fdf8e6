import Testing

@testable import KVStore

@Suite struct CompareAndSetTests {
  struct Case: Sendable, CustomTestStringConvertible {
    var name: String
    var setup: [KVCommand]
    var expected: String?
    var result: KVResult
    /// The key's record afterwards.
    var after: KVRecord?
    var testDescription: String { name }
  }

  static let cases: [Case] = [
    Case(
      name: "expect absent, key absent: creates", setup: [], expected: nil,
      result: .compareAndSet(succeeded: true, current: "new", revision: 1),
      after: record("new", create: 1, mod: 1, version: 1)),
    Case(
      name: "expect absent, key present: fails with the current value", setup: [put("k", "old")],
      expected: nil,
      result: .compareAndSet(succeeded: false, current: "old", revision: 1),
      after: record("old", create: 1, mod: 1, version: 1)),
    Case(
      name: "expect value, matches: updates", setup: [put("k", "old")], expected: "old",
      result: .compareAndSet(succeeded: true, current: "new", revision: 2),
      after: record("new", create: 1, mod: 2, version: 2)),
    Case(
      name: "expect value, mismatch: fails", setup: [put("k", "old")], expected: "other",
      result: .compareAndSet(succeeded: false, current: "old", revision: 1),
      after: record("old", create: 1, mod: 1, version: 1)),
    Case(
      name: "expect value, prefix is not a match", setup: [put("k", "old")], expected: "ol",
      result: .compareAndSet(succeeded: false, current: "old", revision: 1),
      after: record("old", create: 1, mod: 1, version: 1)),
    Case(
      name: "expect value, key absent: fails", setup: [], expected: "old",
      result: .compareAndSet(succeeded: false, current: nil, revision: 0), after: nil),
    Case(
      name: "expect the old value of a deleted key: fails", setup: [put("k", "old"), .delete(key: "k")],
      expected: "old", result: .compareAndSet(succeeded: false, current: nil, revision: 2), after: nil),
    Case(
      name: "expect absent on a deleted key: recreates", setup: [put("k", "old"), .delete(key: "k")],
      expected: nil, result: .compareAndSet(succeeded: true, current: "new", revision: 3),
      after: record("new", create: 3, mod: 3, version: 1)),
    Case(
      name: "expect the empty value", setup: [put("k", "")], expected: "",
      result: .compareAndSet(succeeded: true, current: "new", revision: 2),
      after: record("new", create: 1, mod: 2, version: 2)),
    Case(
      name: "the empty value is not absence", setup: [put("k", "")], expected: nil,
      result: .compareAndSet(succeeded: false, current: "", revision: 1),
      after: record("", create: 1, mod: 1, version: 1)),
  ]

  @Test(arguments: cases)
  func compareAndSet(_ testCase: Case) {
    let driver = Driver()
    driver.nowMillis = 0  // keeps the idempotency clock still, so "changes nothing" is exact
    for command in testCase.setup { driver.apply(command) }
    let before = stateIgnoringIndex(driver.machine)
    let outcome = driver.apply(.compareAndSet(key: "k", expected: testCase.expected, value: "new"))
    #expect(outcome == KVApplyOutcome(result: testCase.result, isDuplicate: false))
    #expect(driver.machine.get("k") == testCase.after)
    if case .compareAndSet(succeeded: false, _, _) = testCase.result {
      #expect(stateIgnoringIndex(driver.machine) == before, "a failed CAS changes nothing")
    }
  }
}
