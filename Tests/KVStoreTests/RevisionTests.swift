import Testing

@testable import KVStore

/// etcd's data model: one global revision per state-changing command; per-key create/mod revisions
/// and versions.
@Suite struct RevisionTests {
  struct Case: Sendable, CustomTestStringConvertible {
    var name: String
    var steps: [(KVCommand, KVResult)]
    /// A list, not a dictionary: `String ==` would merge the NFC/NFD case's keys.
    var expected: [(String, KVRecord?)]
    var revision: UInt64
    var testDescription: String { name }
  }

  static let cases: [Case] = [
    Case(
      name: "create", steps: [(put("a", "1"), .put(revision: 1))],
      expected: [("a", record("1", create: 1, mod: 1, version: 1))], revision: 1),
    Case(
      name: "update keeps createRevision and counts versions",
      steps: [
        (put("a", "1"), .put(revision: 1)), (put("a", "2"), .put(revision: 2)),
        (put("a", "3"), .put(revision: 3)),
      ],
      expected: [("a", record("3", create: 1, mod: 3, version: 3))], revision: 3),
    Case(
      name: "delete bumps the revision",
      steps: [(put("a", "1"), .put(revision: 1)), (.delete(key: "a"), .delete(existed: true, revision: 2))],
      expected: [("a", nil)], revision: 2),
    Case(
      name: "delete of an absent key changes nothing",
      steps: [(put("a", "1"), .put(revision: 1)), (.delete(key: "b"), .delete(existed: false, revision: 1))],
      expected: [("a", record("1", create: 1, mod: 1, version: 1)), ("b", nil)], revision: 1),
    Case(
      name: "recreate resets createRevision and version",
      steps: [
        (put("a", "1"), .put(revision: 1)), (put("a", "2"), .put(revision: 2)),
        (.delete(key: "a"), .delete(existed: true, revision: 3)), (put("a", "x"), .put(revision: 4)),
      ],
      expected: [("a", record("x", create: 4, mod: 4, version: 1))], revision: 4),
    Case(
      name: "multi-key put is one revision",
      steps: [(put(["a": "1", "b": "2", "c": "3"]), .put(revision: 1))],
      expected: [
        ("a", record("1", create: 1, mod: 1, version: 1)), ("b", record("2", create: 1, mod: 1, version: 1)),
        ("c", record("3", create: 1, mod: 1, version: 1)),
      ], revision: 1),
    Case(
      name: "multi-key put mixing updates and creates",
      steps: [
        (put(["a": "1", "b": "2"]), .put(revision: 1)), (put(["b": "3", "c": "4"]), .put(revision: 2)),
      ],
      expected: [
        ("a", record("1", create: 1, mod: 1, version: 1)), ("b", record("3", create: 1, mod: 2, version: 2)),
        ("c", record("4", create: 2, mod: 2, version: 1)),
      ], revision: 2),
    Case(
      name: "other keys are untouched",
      steps: [
        (put("a", "1"), .put(revision: 1)), (put("b", "1"), .put(revision: 2)),
        (put("b", "2"), .put(revision: 3)),
      ],
      expected: [
        ("a", record("1", create: 1, mod: 1, version: 1)), ("b", record("2", create: 2, mod: 3, version: 2)),
      ],
      revision: 3),
    Case(
      name: "empty value is a value",
      steps: [(put("a", ""), .put(revision: 1))],
      expected: [("a", record("", create: 1, mod: 1, version: 1))], revision: 1),
    Case(
      name: "keys are bytes: NFC and NFD spellings are different keys",
      steps: [(put("caf\u{E9}", "nfc"), .put(revision: 1)), (put("cafe\u{301}", "nfd"), .put(revision: 2))],
      expected: [
        ("caf\u{E9}", record("nfc", create: 1, mod: 1, version: 1)),
        ("cafe\u{301}", record("nfd", create: 2, mod: 2, version: 1)),
      ], revision: 2),
  ]

  @Test(arguments: cases)
  func revisionsAndVersions(_ testCase: Case) {
    let driver = Driver()
    for (step, (command, expected)) in testCase.steps.enumerated() {
      let outcome = driver.apply(command)
      #expect(outcome == KVApplyOutcome(result: expected, isDuplicate: false), "step \(step)")
    }
    for (key, expected) in testCase.expected {
      #expect(driver.machine.get(key) == expected, "key \(key)")
    }
    #expect(driver.machine.revision == testCase.revision)
    #expect(driver.machine.appliedIndex == UInt64(testCase.steps.count))
    let live = testCase.expected.compactMap { $0.1 }
    #expect(driver.machine.count == live.count)
    #expect(
      driver.machine.dataBytes
        == testCase.expected.reduce(0) { total, item in
          total + (item.1.map { item.0.utf8.count + $0.value.utf8.count } ?? 0)
        })
  }

  @Test func entriesWithoutCommandsAdvanceOnlyTheAppliedIndex() {
    let driver = Driver()
    driver.apply(put("a", "1"))
    driver.advance()
    driver.advance()
    #expect(driver.machine.appliedIndex == 3)
    #expect(driver.machine.revision == 1)
    driver.apply(put("a", "2"))
    #expect(driver.machine.get("a") == record("2", create: 1, mod: 2, version: 2))
  }

  @Test func gapsInIndexesAreAllowed() {
    let machine = KVStateMachine()
    _ = machine.apply(index: 5, data: KVRequest(command: put("a", "1"), proposedAtMillis: 0).encoded())
    #expect(machine.appliedIndex == 5)
    machine.advance(to: 9)
    _ = machine.apply(index: 10, data: KVRequest(command: put("a", "2"), proposedAtMillis: 0).encoded())
    #expect(machine.appliedIndex == 10)
    #expect(machine.revision == 2)
  }
}

@Suite struct AppliedIndexTests {
  /// Applying an entry twice would apply its command twice; the state machine refuses loudly.
  @Test func reapplyingAnIndexTraps() async {
    await #expect(processExitsWith: .failure) {
      let machine = KVStateMachine()
      let bytes = KVRequest(command: put("a", "1"), proposedAtMillis: 0).encoded()
      _ = machine.apply(index: 1, data: bytes)
      _ = machine.apply(index: 1, data: bytes)
    }
  }
}
