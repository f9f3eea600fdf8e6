import Raft
import Testing

@testable import KVStore

/// The replicated state machine on the multi-version store: the log commands of cluster version 3
/// (transactions, compaction, leases), snapshot format 3 with history, and the upgrade from the
/// formats before it.
@Suite struct MultiVersionMachineTests {
  static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

  static func putOp(_ key: String, _ value: String, lease: Int64 = 0) -> RequestOp {
    .put(PutRequest(key: bytes(key), value: bytes(value), lease: lease))
  }

  /// A driver whose log has agreed cluster version 3.
  static func modern() -> Driver {
    let driver = Driver()
    driver.apply(.setClusterVersion(ClusterVersion.multiVersion))
    return driver
  }

  @Test func multiVersionCommandsWaitForClusterVersion3() {
    let driver = Driver()
    driver.apply(.setClusterVersion(2))
    guard case .rejected(let reason) = driver.apply(.txn(TxnRequest(success: [Self.putOp("a", "1")]))).result
    else {
      Issue.record("a txn applied at cluster version 2")
      return
    }
    #expect(reason.contains("needs cluster version 3"))
    #expect(driver.machine.get("a") == nil)
    driver.apply(.setClusterVersion(3))
    guard
      case .txn(let response, let revision) = driver.apply(.txn(TxnRequest(success: [Self.putOp("a", "1")])))
        .result
    else {
      Issue.record("the txn did not apply at cluster version 3")
      return
    }
    #expect(response.succeeded && revision == 1)
    #expect(driver.machine.get("a")?.value == "1")
  }

  @Test func storeErrorsAreResultsAndChangeNothing() {
    let driver = Self.modern()
    driver.apply(put("a", "1"))
    let before = stateIgnoringIndex(driver.machine)
    #expect(driver.apply(.compact(revision: 5)).result == .failed(.futureRevision, revision: 1))
    #expect(
      driver.apply(.txn(TxnRequest(success: [Self.putOp("b", "1", lease: 42)]))).result
        == .failed(.leaseNotFound, revision: 1))
    #expect(driver.apply(.revokeLease(id: 7)).result == .failed(.leaseNotFound, revision: 1))
    #expect(
      driver.apply(.txn(TxnRequest(success: [Self.putOp("b", "1"), Self.putOp("b", "2")]))).result
        == .failed(.duplicateKey, revision: 1))
    #expect(stateIgnoringIndex(driver.machine) == before)
  }

  @Test func limitsAreRejectionsEveryReplicaReaches() {
    let driver = Self.modern()
    let tooMany = TxnRequest(success: (0..<129).map { Self.putOp("k\($0)", "v") })
    #expect(
      driver.apply(.txn(tooMany)).result
        == .rejected(reason: "etcdserver: too many operations in txn request"))
    #expect(
      driver.apply(.grantLease(id: 1, ttl: 9_000_000_001)).result
        == .rejected(reason: "etcdserver: too large lease TTL"))
    guard case .rejected = driver.apply(.compact(revision: 1), idempotencyKey: "retry-me").result else {
      Issue.record("an idempotency key on a multi-version command was accepted")
      return
    }
  }

  @Test func aLeaseRevokeDeletesItsKeysAtOneRevision() {
    let driver = Self.modern()
    driver.apply(.grantLease(id: 9, ttl: 10))
    driver.apply(
      .txn(TxnRequest(success: [Self.putOp("svc/a", "1", lease: 9), Self.putOp("svc/b", "2", lease: 9)])))
    driver.apply(put("other", "x"))
    #expect(driver.machine.store.lease(9)?.keys == [Self.bytes("svc/a"), Self.bytes("svc/b")])
    #expect(driver.apply(.revokeLease(id: 9)).result == .leaseRevoked(deleted: 2, revision: 3))
    #expect(driver.machine.get("svc/a") == nil && driver.machine.get("svc/b") == nil)
    #expect(driver.machine.get("other") != nil)
    // Both deletes are at revision 3, in key order.
    let events = try? driver.machine.store.events(in: .prefix(Self.bytes("svc/")), from: 3)
    #expect(events?.map(\.kv.modRevision) == [3, 3])
    #expect(events?.map(\.type) == [.delete, .delete])
  }

  /// A seeded mix of every command, the course's and the multi-version ones.
  static func workload(_ random: inout SplitMix64, steps: Int) -> [KVCommand] {
    var commands: [KVCommand] = []
    var leases: [Int64] = []
    for step in 0..<steps {
      let key = "k\(Int.random(in: 0..<40, using: &random))"
      switch Int.random(in: 0..<10, using: &random) {
      case 0...2:
        commands.append(put(key, "v\(step)"))
      case 3:
        commands.append(.delete(key: key))
      case 4:
        commands.append(.compareAndSet(key: key, expected: nil, value: "cas\(step)"))
      case 5:
        let lease = leases.randomElement(using: &random) ?? 0
        commands.append(
          .txn(
            TxnRequest(
              compare: [Compare(range: KeyRange(key: bytes(key)), .greater, .version(1))],
              success: [
                putOp(key, "t\(step)", lease: lease), .range(RangeRequest(range: .prefix(bytes("k1")))),
              ],
              failure: [.deleteRange(DeleteRangeRequest(range: .prefix(bytes("k2")), prevKV: true))])))
      case 6:
        let id = Int64(step + 1)
        leases.append(id)
        commands.append(.grantLease(id: id, ttl: Int64.random(in: 1...100, using: &random)))
      case 7:
        if let id = leases.randomElement(using: &random) {
          if Bool.random(using: &random) {
            leases.removeAll { $0 == id }
            commands.append(.revokeLease(id: id))
          } else {
            commands.append(.checkpointLeases([LeaseCheckpoint(id: id, remainingTTL: 3)]))
          }
        }
      case 8:
        commands.append(.compact(revision: Int64(step / 3)))
      default:
        var read = RangeRequest(range: .prefix(bytes("k")))
        read.revision = Int64(step / 2)
        commands.append(.txn(TxnRequest(success: [.range(read)])))
      }
    }
    return commands
  }

  /// Format 3 carries the history and the leases: a restored replica answers every past revision,
  /// and every later command, as the original does.
  @Test(arguments: [1, 100, 4096, 1 << 20])
  func format3RoundTripsHistoryAndLeases(chunkBytes: Int) throws {
    var random = SplitMix64(seed: UInt64(chunkBytes))
    let original = Self.modern()
    for command in Self.workload(&random, steps: 400) { original.apply(command) }
    let chunks = serializedChunks(original.machine.snapshot(), chunkBytes: chunkBytes)
    #expect(chunks.flatMap { $0 }.count > 0)
    let restored = Driver()
    try restore(restored.machine, appliedIndex: original.machine.appliedIndex, from: chunks)
    restored.resume(at: original.machine.appliedIndex)
    #expect(restored.machine.canonicalState() == original.machine.canonicalState())
    #expect(restored.machine.canonicalState().history?.isEmpty == false)
    for command in Self.workload(&random, steps: 200) {
      #expect(restored.apply(command) == original.apply(command), "\(command)")
    }
    #expect(restored.machine.canonicalState() == original.machine.canonicalState())
  }

  /// Any corruption of a format 3 stream is refused and leaves the state as it was.
  @Test(arguments: 0..<40 as Range<UInt64>)
  func aCorruptFormat3StreamChangesNothing(seed: UInt64) {
    var random = SplitMix64(seed: 900 + seed)
    let original = Self.modern()
    for command in Self.workload(&random, steps: 150) { original.apply(command) }
    var stream = serializedChunks(original.machine.snapshot(), chunkBytes: 300).flatMap { $0 }
    let position = Int.random(in: 0..<stream.count, using: &random)
    stream[position] ^= UInt8.random(in: 1...255, using: &random)
    let target = Self.modern()
    target.apply(put("mine", "kept"))
    let before = target.machine.canonicalState()
    #expect(throws: KVDecodingError.self) {
      try restore(target.machine, appliedIndex: original.machine.appliedIndex, from: [stream])
    }
    #expect(target.machine.canonicalState() == before)
  }

  /// Below version 3 a replica restored from a format 1 or 2 snapshot has no history, the others
  /// all of it. Raising the version compacts every replica at the same revision, so from then on a
  /// transaction reading the past gets the same answer on each.
  @Test func raisingToVersion3MakesHistoryAgree() throws {
    let full = Driver()
    full.apply(.setClusterVersion(2))
    for i in 0..<50 { full.apply(put("k\(i % 7)", "v\(i)")) }
    let chunks = serializedChunks(full.machine.snapshot())
    let restored = Driver()
    try restore(restored.machine, appliedIndex: full.machine.appliedIndex, from: chunks)
    restored.resume(at: full.machine.appliedIndex)
    #expect(restored.machine.store.compactRevision == 50)
    #expect(full.machine.store.compactRevision == 0)
    for driver in [full, restored] {
      driver.apply(put("after", "x"))
      driver.apply(.setClusterVersion(3))
    }
    #expect(restored.machine.canonicalState() == full.machine.canonicalState())
    var past = RangeRequest(range: .prefix(Self.bytes("k")))
    past.revision = 30
    let read = KVCommand.txn(TxnRequest(success: [.range(past)]))
    #expect(full.apply(read) == restored.apply(read))
    #expect(full.apply(read).result == .failed(.compacted(compactRevision: 51), revision: 51))
  }

  /// Each snapshot is written in the format its cluster version reads.
  @Test func theFormatFollowsTheClusterVersion() {
    for (version, format) in [(1, 1), (2, 2), (3, 3)] as [(UInt32, UInt8)] {
      let driver = Driver()
      if version > 1 { driver.apply(.setClusterVersion(version)) }
      driver.apply(put("a", "b"))
      let stream = serializedChunks(driver.machine.snapshot()).flatMap { $0 }
      // Frame header (13 bytes), then the magic (4), then the format byte.
      #expect(stream[SnapshotFormat.frameHeaderBytes + 4] == format, "cluster version \(version)")
      let older = Driver(supportedClusterVersion: version == 3 ? 2 : 3)
      if version == 3 {
        #expect(throws: KVDecodingError.unsupportedVersion(3)) {
          try restore(older.machine, appliedIndex: driver.machine.appliedIndex, from: [stream])
        }
      }
    }
  }
}
