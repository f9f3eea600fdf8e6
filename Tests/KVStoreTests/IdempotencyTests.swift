import Testing

@testable import KVStore

/// A retried request must not commit twice (lesson 19): the first result is remembered by key.
@Suite struct IdempotencyTests {
  @Test func duplicateReturnsTheOriginalResultWithoutApplying() {
    let driver = Driver()
    let first = driver.apply(put("a", "1"), idempotencyKey: "req-1")
    #expect(first == KVApplyOutcome(result: .put(revision: 1), isDuplicate: false))
    driver.apply(put("b", "1"))
    let before = stateIgnoringIndex(driver.machine)

    let retry = driver.apply(put("a", "1"), idempotencyKey: "req-1")
    #expect(retry == KVApplyOutcome(result: .put(revision: 1), isDuplicate: true))
    #expect(driver.machine.revision == 2)
    #expect(driver.machine.get("a") == record("1", create: 1, mod: 1, version: 1))
    #expect(stateIgnoringIndex(driver.machine) == before)
  }

  /// The stored result wins even if the retried command differs, or would now fail.
  @Test(arguments: [
    KVCommand.compareAndSet(key: "lock", expected: nil, value: "me"),
    KVCommand.delete(key: "lock"),
    put("lock", "someone else"),
  ])
  func retryReturnsTheStoredResultWhateverItCarries(_ retried: KVCommand) {
    let driver = Driver()
    let first = driver.apply(.compareAndSet(key: "lock", expected: nil, value: "me"), idempotencyKey: "k")
    #expect(first.result == .compareAndSet(succeeded: true, current: "me", revision: 1))
    let retry = driver.apply(retried, idempotencyKey: "k")
    #expect(retry == KVApplyOutcome(result: first.result, isDuplicate: true))
    #expect(driver.machine.get("lock")?.value == "me")
    #expect(driver.machine.revision == 1)
  }

  @Test func failedResultsAreRememberedToo() {
    let driver = Driver()
    driver.apply(put("k", "x"))
    let first = driver.apply(.compareAndSet(key: "k", expected: "y", value: "z"), idempotencyKey: "cas")
    driver.apply(put("k", "y"))
    let retry = driver.apply(.compareAndSet(key: "k", expected: "y", value: "z"), idempotencyKey: "cas")
    #expect(retry == KVApplyOutcome(result: first.result, isDuplicate: true))
    #expect(driver.machine.get("k")?.value == "y")
  }

  @Test func differentKeysApplySeparately() {
    let driver = Driver()
    driver.apply(put("a", "1"), idempotencyKey: "one")
    let second = driver.apply(put("a", "1"), idempotencyKey: "two")
    #expect(second == KVApplyOutcome(result: .put(revision: 2), isDuplicate: false))
    #expect(driver.machine.idempotencyRecordCount == 2)
  }

  struct ExpiryCase: Sendable, CustomTestStringConvertible {
    var name: String
    /// proposedAtMillis of the original, of an unrelated request in between (if any), and of the retry.
    var original: UInt64
    var between: UInt64?
    var retry: UInt64
    var duplicate: Bool
    var testDescription: String { name }
  }

  static let ttl: UInt64 = 1_000
  static let expiryCases: [ExpiryCase] = [
    ExpiryCase(name: "just before the TTL", original: 5_000, between: nil, retry: 5_999, duplicate: true),
    ExpiryCase(name: "at the TTL", original: 5_000, between: nil, retry: 6_000, duplicate: false),
    ExpiryCase(name: "long after", original: 5_000, between: nil, retry: 60_000, duplicate: false),
    ExpiryCase(
      name: "expiry follows the highest time applied, not the retry's own", original: 5_000, between: 6_500,
      retry: 5_100, duplicate: false),
    ExpiryCase(
      name: "a lagging clock does not move time back", original: 5_000, between: 100, retry: 5_500,
      duplicate: true),
    ExpiryCase(
      name: "a record made with a lagging timestamp ages from the clock", original: 100, between: nil,
      retry: 100, duplicate: true),
  ]

  @Test(arguments: expiryCases)
  func expiryUsesProposalTimesOnly(_ testCase: ExpiryCase) {
    var limits = KVLimits()
    limits.idempotencyTTLMillis = Self.ttl
    let driver = Driver(limits: limits)
    driver.apply(put("x", "0"), at: 4_000)  // the clock is at 4000 when the lagging case records
    driver.apply(put("a", "1"), idempotencyKey: "k", at: testCase.original)
    if let between = testCase.between { driver.apply(put("b", "1"), at: between) }
    let retry = driver.apply(put("a", "1"), idempotencyKey: "k", at: testCase.retry)
    #expect(retry.isDuplicate == testCase.duplicate)
    #expect(driver.machine.get("a")?.version == (testCase.duplicate ? 1 : 2))
  }

  @Test func expiredRecordsAreDropped() {
    var limits = KVLimits()
    limits.idempotencyTTLMillis = 100
    let driver = Driver(limits: limits)
    for i in 0..<10 { driver.apply(put("a", "\(i)"), idempotencyKey: "k\(i)", at: UInt64(i * 10)) }
    #expect(driver.machine.idempotencyRecordCount == 10)
    driver.apply(put("b", "1"), at: 150)  // expires those recorded at 0...50
    #expect(driver.machine.idempotencyRecordCount == 4)
    #expect(driver.machine.canonicalState().remembered.map(\.key) == ["k6", "k7", "k8", "k9"])
  }

  @Test func tableIsBoundedAndEvictsTheOldestFirst() {
    var limits = KVLimits()
    limits.idempotencyRecordsMax = 3
    let driver = Driver(limits: limits)
    for i in 1...5 { driver.apply(put("a", "\(i)"), idempotencyKey: "k\(i)") }
    #expect(driver.machine.idempotencyRecordCount == 3)
    #expect(driver.machine.canonicalState().remembered.map(\.key) == ["k3", "k4", "k5"])
    #expect(driver.apply(put("a", "x"), idempotencyKey: "k5").isDuplicate)
    #expect(driver.apply(put("a", "x"), idempotencyKey: "k3").isDuplicate)
    #expect(!driver.apply(put("a", "x"), idempotencyKey: "k1").isDuplicate, "evicted, so applied again")
    #expect(driver.machine.canonicalState().remembered.map(\.key) == ["k4", "k5", "k1"])
  }

  @Test func zeroCapacityRemembersNothing() {
    var limits = KVLimits()
    limits.idempotencyRecordsMax = 0
    let driver = Driver(limits: limits)
    driver.apply(put("a", "1"), idempotencyKey: "k")
    #expect(!driver.apply(put("a", "1"), idempotencyKey: "k").isDuplicate)
    #expect(driver.machine.revision == 2)
  }

  @Test func rejectedCommandsAreNotRememberedAndDoNotMoveTheClock() {
    var limits = KVLimits()
    limits.maxValueBytes = 4
    limits.idempotencyTTLMillis = 100
    let driver = Driver(limits: limits)
    driver.apply(put("a", "1"), idempotencyKey: "ok", at: 0)
    let rejected = driver.apply(put("a", "too long"), idempotencyKey: "big", at: 10_000)
    guard case .rejected = rejected.result else {
      Issue.record("expected a rejection, got \(rejected)")
      return
    }
    #expect(driver.machine.idempotencyRecordCount == 1)
    #expect(driver.apply(put("a", "1"), idempotencyKey: "ok", at: 50).isDuplicate, "clock still at 50")
    let again = driver.apply(put("a", "too long"), idempotencyKey: "big", at: 60)
    #expect(!again.isDuplicate)
  }

  @Test(arguments: ["", String(repeating: "k", count: 257), "caf\u{E9}", "tab\there", "new\nline"])
  func invalidIdempotencyKeysAreRejected(_ key: String) {
    let driver = Driver()
    let outcome = driver.apply(put("a", "1"), idempotencyKey: key)
    guard case .rejected = outcome.result else {
      Issue.record("expected a rejection, got \(outcome)")
      return
    }
    #expect(driver.machine.revision == 0)
  }

  @Test func longestAllowedKeyIsAccepted() {
    let driver = Driver()
    let key = String(repeating: "k", count: 256)
    driver.apply(put("a", "1"), idempotencyKey: key)
    #expect(driver.apply(put("a", "1"), idempotencyKey: key).isDuplicate)
  }

  @Test func recordsAndClockSurviveSnapshotAndRestore() throws {
    var limits = KVLimits()
    limits.idempotencyTTLMillis = 1_000
    let driver = Driver(limits: limits)
    driver.apply(put("a", "1"), idempotencyKey: "early", at: 1_000)
    driver.apply(.compareAndSet(key: "a", expected: "1", value: "2"), idempotencyKey: "late", at: 1_800)
    driver.apply(.delete(key: "zz"), idempotencyKey: "absent", at: 1_900)
    let snapshot = driver.machine.snapshot()

    let restored = Driver(limits: limits)
    try restore(
      restored.machine, appliedIndex: snapshot.appliedIndex, from: serializedChunks(snapshot, chunkBytes: 64))
    restored.resume(at: snapshot.appliedIndex)
    #expect(restored.machine.canonicalState() == driver.machine.canonicalState())

    let late = restored.apply(
      .compareAndSet(key: "a", expected: "1", value: "2"), idempotencyKey: "late", at: 1_900)
    #expect(
      late
        == KVApplyOutcome(
          result: .compareAndSet(succeeded: true, current: "2", revision: 2), isDuplicate: true))
    #expect(restored.apply(.delete(key: "zz"), idempotencyKey: "absent", at: 1_900).isDuplicate)
    // The restored clock (1900) plus this proposal expire "early" (recorded at 1000) but not "late".
    #expect(!restored.apply(put("a", "1"), idempotencyKey: "early", at: 2_000).isDuplicate)
    #expect(restored.apply(put("q", "1"), idempotencyKey: "late", at: 2_000).isDuplicate)
  }
}
