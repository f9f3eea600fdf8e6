import Testing

@testable import KVStore

/// Limits are enforced in `apply` too, so a replica reaches the HTTP layer's verdict from the log alone.
@Suite struct LimitsTests {
  static var limits: KVLimits {
    var limits = KVLimits()
    limits.maxKeyBytes = 8
    limits.maxValueBytes = 16
    limits.maxPairsPerPut = 20
    return limits
  }

  struct Case: Sendable, CustomTestStringConvertible {
    var name: String
    var command: KVCommand
    /// nil when the command must be accepted.
    var rejection: String?
    var testDescription: String { name }
  }

  static func pairs(_ count: Int, duplicateAt: Int? = nil) -> KVCommand {
    .put((0..<count).map { KeyValue(key: "k\($0 == duplicateAt ? 0 : $0)", value: "v") })
  }

  static let cases: [Case] = [
    Case(name: "longest key", command: put("12345678", "v"), rejection: nil),
    Case(name: "key too long", command: put("123456789", "v"), rejection: "key of 9 bytes exceeds 8"),
    Case(
      name: "key limit counts UTF-8 bytes", command: put("\u{E9}\u{E9}\u{E9}\u{E9}\u{E9}", "v"),
      rejection: "key of 10 bytes exceeds 8"),
    Case(name: "empty key", command: put("", "v"), rejection: "empty key"),
    Case(name: "longest value", command: put("k", String(repeating: "v", count: 16)), rejection: nil),
    Case(
      name: "value too long", command: put("k", String(repeating: "v", count: 17)),
      rejection: "value of 17 bytes exceeds 16"),
    Case(name: "most pairs", command: pairs(20), rejection: nil),
    Case(name: "too many pairs", command: pairs(21), rejection: "put of 21 pairs exceeds the limit of 20"),
    Case(name: "empty put", command: .put([]), rejection: "put without pairs"),
    Case(
      name: "duplicate key, short put", command: put(["a": "1", "b": "2", "a": "3"]),
      rejection: "duplicate key in put"),
    Case(
      name: "duplicate key, long put", command: pairs(20, duplicateAt: 19), rejection: "duplicate key in put"),
    Case(
      name: "one bad pair rejects the whole put", command: put(["a": "1", "123456789": "2"]),
      rejection: "key of 9 bytes exceeds 8"),
    Case(
      name: "delete with a long key", command: .delete(key: "123456789"),
      rejection: "key of 9 bytes exceeds 8"),
    Case(name: "delete with an empty key", command: .delete(key: ""), rejection: "empty key"),
    Case(
      name: "compare-and-set with a long value",
      command: .compareAndSet(key: "k", expected: nil, value: String(repeating: "v", count: 17)),
      rejection: "value of 17 bytes exceeds 16"),
    Case(
      name: "compare-and-set may expect an unstorable value",
      command: .compareAndSet(key: "k", expected: String(repeating: "v", count: 99), value: "v"),
      rejection: nil),
  ]

  @Test(arguments: cases)
  func limitsAreEnforcedInApply(_ testCase: Case) {
    let driver = Driver(limits: Self.limits)
    driver.apply(put("k", "v"))
    let before = stateIgnoringIndex(driver.machine)
    let outcome = driver.apply(testCase.command)
    if let rejection = testCase.rejection {
      #expect(outcome == KVApplyOutcome(result: .rejected(reason: rejection), isDuplicate: false))
      #expect(stateIgnoringIndex(driver.machine) == before, "a rejected command changes nothing")
    } else {
      if case .rejected = outcome.result { Issue.record("unexpected rejection: \(outcome)") }
    }
    #expect(driver.machine.appliedIndex == 2)
  }

  @Test func defaultsMatchTheHTTPLayer() {
    let limits = KVLimits()
    #expect(limits.maxKeyBytes == 4096)
    #expect(limits.maxValueBytes == 1 << 20)
    #expect(limits.maxPairsPerPut == 1024)
    #expect(limits.idempotencyRecordsMax == 100_000)
    #expect(limits.idempotencyTTLMillis == 600_000)
    #expect(limits.maxIdempotencyKeyBytes == 256)
  }

  @Test func keysLongerThanTheProbeAreStillFound() throws {
    // A snapshot from a node with larger limits may hold keys longer than this node's limit.
    var large = KVLimits()
    large.maxKeyBytes = 10_000
    let source = Driver(limits: large)
    let key = String(repeating: "k", count: 9_000)
    source.apply(put(key, "v"))
    let small = KVStateMachine(limits: Self.limits)
    try restore(small, appliedIndex: 1, from: serializedChunks(source.machine.snapshot()))
    #expect(small.get(key)?.value == "v")
    #expect(small.get(String(repeating: "k", count: 8_999)) == nil)
  }
}
