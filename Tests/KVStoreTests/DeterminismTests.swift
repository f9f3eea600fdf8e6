import Raft
import Testing

@testable import KVStore

/// Replicas fed the same log end in the same state, however they got there.
@Suite struct DeterminismTests {
  /// A seeded mixed workload: multi-key puts, deletes, CAS, idempotent retries, no-ops, garbage,
  /// and a clock that sometimes runs backwards (a new leader with a lagging clock).
  static func workload(seed: UInt64, count: Int) -> [[UInt8]?] {
    var random = SplitMix64(seed: seed)
    var millis: UInt64 = 1_000_000
    var recentKeys: [String] = []
    func key() -> String { "key/\(Int.random(in: 0..<200, using: &random))" }
    var log: [[UInt8]?] = []
    for step in 0..<count {
      millis =
        Bool.random(using: &random) ? millis + UInt64.random(in: 0...500, using: &random) : millis - 200
      var idempotencyKey: String?
      if Int.random(in: 0..<4, using: &random) == 0 {
        if !recentKeys.isEmpty && Bool.random(using: &random) {
          idempotencyKey = recentKeys.randomElement(using: &random)
        } else {
          idempotencyKey = "req-\(step)"
          recentKeys.append("req-\(step)")
        }
      }
      let command: KVCommand
      switch Int.random(in: 0..<20, using: &random) {
      case 0:
        log.append(nil)  // a no-op or configuration entry
        continue
      case 1:
        log.append(random.bytes(count: Int.random(in: 0...20, using: &random)))
        continue
      case 2..<9:
        command = put(key(), "v\(step)")
      case 9..<12:
        let pairs = (0..<Int.random(in: 1...5, using: &random)).map {
          KeyValue(key: "\(key())/\($0)", value: "m\(step)")
        }
        command = .put(pairs)
      case 12..<15:
        command = .delete(key: key())
      default:
        command = .compareAndSet(
          key: key(),
          expected: Bool.random(using: &random) ? nil : "v\(step - Int.random(in: 1...30, using: &random))",
          value: "c\(step)")
      }
      log.append(
        KVRequest(command: command, idempotencyKey: idempotencyKey, proposedAtMillis: millis).encoded())
    }
    return log
  }

  static func feed(_ driver: Driver, _ log: some Sequence<[UInt8]?>) -> [KVApplyOutcome] {
    log.compactMap { entry in
      guard let entry else {
        driver.advance()
        return nil
      }
      return driver.applyBytes(entry)
    }
  }

  @Test(arguments: [1, 2, 3] as [UInt64])
  func replicasFedTheSameLogAgree(seed: UInt64) {
    var limits = KVLimits()
    limits.idempotencyRecordsMax = 50
    limits.idempotencyTTLMillis = 20_000
    let log = Self.workload(seed: seed, count: 4_000)
    let first = Driver(limits: limits)
    let second = Driver(limits: limits)
    let firstOutcomes = Self.feed(first, log)
    let secondOutcomes = Self.feed(second, log)
    #expect(firstOutcomes == secondOutcomes)
    #expect(first.machine.canonicalState() == second.machine.canonicalState())
    #expect(firstOutcomes.contains { $0.isDuplicate }, "the workload should exercise retries")
    #expect(first.machine.count > 50)
  }

  /// A replica that restores a snapshot midway and applies the rest matches one that applied it all.
  @Test(arguments: [1, 2] as [UInt64])
  func restoringMidwayAgreesWithApplyingEverything(seed: UInt64) throws {
    var limits = KVLimits()
    limits.idempotencyRecordsMax = 50
    limits.idempotencyTTLMillis = 20_000
    let log = Self.workload(seed: seed, count: 3_000)
    let leader = Driver(limits: limits)
    let outcomes = Self.feed(leader, log[..<1_500])
    let snapshot = leader.machine.snapshot()
    let rest = Self.feed(leader, log[1_500...])

    let follower = Driver(limits: limits)
    try restore(
      follower.machine, appliedIndex: snapshot.appliedIndex, from: serializedChunks(snapshot, chunkBytes: 300)
    )
    follower.resume(at: snapshot.appliedIndex)
    #expect(Self.feed(follower, log[1_500...]) == rest)
    #expect(follower.machine.canonicalState() == leader.machine.canonicalState())
    #expect(!outcomes.isEmpty)
  }
}
