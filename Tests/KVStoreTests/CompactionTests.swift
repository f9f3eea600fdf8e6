import Raft
import Testing

@testable import KVStore

/// Compaction visits only the keys changed since the last one (`MVCCStore.compact`), or walks the
/// whole index when those are many. These tests run seeded workloads with several compactions and
/// compare, after each, the store compacted each way (incremental, rebuilt, and as `compact`
/// chooses) against a copy compacted by the implementation from before (`compactByRebuilding`
/// below): the same histories, revision index, held bytes (also recounted from scratch), reads at
/// every revision and watch history; and a snapshot of it round-trips.
@Suite struct CompactionTests {
  @Test(arguments: [1, 2, 3, 4, 5, 6] as [UInt64])
  func incrementalCompactionMatchesAFullRebuild(seed: UInt64) throws {
    var random = SplitMix64(seed: seed)
    var store = MVCCStore()
    var compactions = 0
    var leases: [Int64] = []
    for step in 0..<1_500 {
      try Self.randomWrite(&random, step: step, leases: &leases, to: &store)
      // Every 40 to 160 writes, a compaction somewhere between the last one and now.
      guard Int.random(in: 0..<100, using: &random) == 0 || step % 160 == 159 else { continue }
      guard store.revision > store.compactRevision else { continue }
      let target = Int64.random(in: (store.compactRevision + 1)...store.revision, using: &random)
      let frozen = store
      let frozenAnswers = Self.answers(frozen)
      var reference = store
      try reference.compactByRebuilding(target)
      var incremental = store
      try incremental.compact(target, strategy: .incremental)
      var rebuilt = store
      try rebuilt.compact(target, strategy: .rebuild)
      try store.compact(target)
      compactions += 1
      let context = "seed \(seed) step \(step): compact \(target)"
      #expect(Self.state(store) == Self.state(reference), "\(context)")
      #expect(Self.state(incremental) == Self.state(reference), "\(context): incremental")
      #expect(Self.state(rebuilt) == Self.state(reference), "\(context): rebuilt")
      #expect(Self.answers(incremental) == Self.answers(reference), "\(context): incremental")
      #expect(incremental.heldBytes == MVCCStore.heldBytes(in: incremental.index), "\(context): incremental")
      #expect(rebuilt.heldBytes == MVCCStore.heldBytes(in: rebuilt.index), "\(context): rebuilt")
      #expect(store.heldBytes == MVCCStore.heldBytes(in: store.index), "\(context): held bytes recounted")
      #expect(Self.answers(store) == Self.answers(reference), "\(context)")
      #expect(Self.answers(frozen) == frozenAnswers, "\(context): a frozen copy is untouched")
      #expect(store.index.invariantViolations() == [] && store.changesByRevision.invariantViolations() == [])
      let restored = try Self.roundTrip(store)
      #expect(Self.state(restored) == Self.state(store), "\(context): snapshot round trip")
      #expect(Self.answers(restored) == Self.answers(store), "\(context): snapshot round trip")
      // A compaction at or below the compacted revision is refused, as before.
      #expect(throws: MVCCError.compacted(compactRevision: target)) { try store.compact(target) }
    }
    #expect(compactions >= 10, "the workload compacted several times")
    #expect(store.revision > 1_000)
  }

  /// The revision index keeps exactly the changes after the compacted revision, and a key deleted
  /// at or before it leaves the index, while one re-created after it keeps only its new generation.
  @Test func compactionDropsTombstonesAndTheRevisionsBelowIt() throws {
    var store = MVCCStore()
    let (a, b, c) = (Array("a".utf8), Array("b".utf8), Array("c".utf8))
    _ = try store.put(PutRequest(key: a, value: [1]))  // 1
    _ = try store.put(PutRequest(key: b, value: [2, 2]))  // 2
    _ = try store.deleteRange(DeleteRangeRequest(range: KeyRange(key: a)))  // 3
    _ = try store.put(PutRequest(key: c, value: [3, 3, 3]))  // 4
    _ = try store.deleteRange(DeleteRangeRequest(range: KeyRange(key: b)))  // 5
    _ = try store.put(PutRequest(key: b, value: [4]))  // 6
    try store.compact(5)
    #expect(store.index[a] == nil, "deleted at 3: gone")
    let bNewest = try #require(store.index[b])
    #expect(bNewest.revision.main == 6 && bNewest.older == nil, "re-created at 6: its new generation alone")
    #expect(store.changesByRevision.count == 1)
    #expect(store.heldBytes == 1 + 1 + 1 + 3 && store.heldBytes == MVCCStore.heldBytes(in: store.index))
    // A compaction with nothing changed since the last one changes nothing but the revision.
    let before = Self.state(store)
    try store.compact(6)
    #expect(Self.state(store).histories == before.histories)
    #expect(store.changesByRevision.count == 0 && store.compactRevision == 6)
  }

  // MARK: - The workload

  static let keySpace: [[UInt8]] = (0..<60).map { Array("key/\($0 % 7)/\($0)".utf8) }

  static func randomWrite(
    _ random: inout SplitMix64, step: Int, leases: inout [Int64], to store: inout MVCCStore
  ) throws {
    func key() -> [UInt8] { keySpace[Int.random(in: 0..<keySpace.count, using: &random)] }
    func value() -> [UInt8] {
      [UInt8](repeating: UInt8(step % 251), count: Int.random(in: 0..<40, using: &random))
    }
    switch Int.random(in: 0..<20, using: &random) {
    case 0..<11:
      let lease = Int.random(in: 0..<4, using: &random) == 0 ? leases.randomElement(using: &random) ?? 0 : 0
      _ = try store.put(PutRequest(key: key(), value: value(), lease: lease))
    case 11..<14:
      _ = try store.deleteRange(DeleteRangeRequest(range: KeyRange(key: key())))
    case 14:
      _ = try store.deleteRange(DeleteRangeRequest(range: .prefix(Array("key/\(step % 7)/".utf8))))
    case 15..<18:
      // Several keys at one revision (distinct ones: a transaction may not put a key twice).
      var keys: [[UInt8]] = []
      for _ in 0..<Int.random(in: 1...4, using: &random) {
        let candidate = key()
        if !keys.contains(candidate) { keys.append(candidate) }
      }
      _ = try store.txn(TxnRequest(success: keys.map { .put(PutRequest(key: $0, value: value())) }))
    case 18:
      let id = Int64(step + 1)
      try store.grant(lease: id, ttl: 10)
      leases.append(id)
    default:
      guard let id = leases.randomElement(using: &random) else { return }
      leases.removeAll { $0 == id }
      try store.revoke(lease: id)
    }
  }

  // MARK: - What is compared

  struct State: Equatable {
    var revision: Int64
    var compactRevision: Int64
    var heldBytes: Int
    var liveBytes: Int
    var liveKeyCount: Int
    var histories: [[UInt8]: [MVCCStore.ChangeRecord]]
    var changesByRevision: [[UInt8]]
    var leases: [Lease]
  }

  static func state(_ store: MVCCStore) -> State {
    var histories: [[UInt8]: [MVCCStore.ChangeRecord]] = [:]
    store.forEachHistory(from: []) { key, changes in
      histories[key] = changes
      return true
    }
    var changes: [[UInt8]] = []
    store.changesByRevision.forEach(from: [], below: nil) { at, key in
      changes.append(at + [0xFF] + key)
      return true
    }
    return State(
      revision: store.revision, compactRevision: store.compactRevision, heldBytes: store.heldBytes,
      liveBytes: store.liveBytes, liveKeyCount: store.liveKeyCount, histories: histories,
      changesByRevision: changes, leases: store.leaseIDs.compactMap { store.lease($0) })
  }

  /// A full scan at every revision from the compacted one (and the errors just outside), and every
  /// change since it with previous values.
  static func answers(_ store: MVCCStore) -> [String] {
    var answers: [String] = []
    for revision in max(0, store.compactRevision - 1)...(store.revision + 1) {
      var scan = RangeRequest(range: KeyRange(key: [0], rangeEnd: [0]))
      scan.revision = revision
      answers.append("\(Result { () throws(MVCCError) in try store.range(scan) })")
    }
    let all = KeyRange(key: [0], rangeEnd: [0])
    for start in [store.compactRevision, store.compactRevision + 1] {
      answers.append(
        "\(Result { () throws(MVCCError) in try store.events(in: all, from: start, prevKV: true) })")
    }
    return answers
  }

  /// The store rebuilt from what a format 3 snapshot carries of it.
  static func roundTrip(_ store: MVCCStore) throws -> MVCCStore {
    var builder = try MVCCStore.Builder(revision: store.revision, compactRevision: store.compactRevision)
    var histories: [([UInt8], [MVCCStore.ChangeRecord])] = []
    store.forEachHistory(from: []) { key, changes in
      histories.append((key, changes))
      return true
    }
    for (key, changes) in histories { try builder.addHistory(key: key, changes: changes) }
    var leases: [MVCCStore.LeaseSnapshotRecord] = []
    store.forEachLease(from: 0) { record in
      leases.append(record)
      return true
    }
    for record in leases { try builder.addLease(record) }
    return try builder.finish()
  }
}

extension MVCCStore {
  /// Compaction as it was before it became incremental: every key's history rewritten and both
  /// indexes rebuilt, held bytes recounted. The reference the tests compare with.
  mutating func compactByRebuilding(_ revision: Int64) throws(MVCCError) {
    guard revision > compactRevision else { throw .compacted(compactRevision: compactRevision) }
    guard revision <= self.revision else { throw .futureRevision }
    var compacted = SortedMap<Change>()
    index.forEach(from: [], below: nil) { key, newest in
      if let kept = Self.rebuild(newest, at: revision) { compacted.insert(kept, forKey: key) }
      return true
    }
    index = compacted
    var remaining = SortedMap<[UInt8]>()
    changesByRevision.forEach(from: Revision(main: revision + 1).indexKey, below: nil) { at, key in
      remaining.insert(key, forKey: at)
      return true
    }
    changesByRevision = remaining
    compactRevision = revision
    heldBytes = Self.heldBytes(in: index)
  }

  private static func rebuild(_ newest: Change, at revision: Int64) -> Change? {
    var newer: [Change] = []
    var change: Change? = newest
    while let current = change, current.revision.main > revision {
      newer.append(current)
      change = current.older
    }
    var kept: Change? = nil
    if let atRevision = change, atRevision.value != nil {
      kept = Change(
        revision: atRevision.revision, value: atRevision.value, createRevision: atRevision.createRevision,
        version: atRevision.version, lease: atRevision.lease, older: nil)
    }
    for current in newer.reversed() {
      kept = Change(
        revision: current.revision, value: current.value, createRevision: current.createRevision,
        version: current.version, lease: current.lease, older: kept)
    }
    return kept
  }
}
