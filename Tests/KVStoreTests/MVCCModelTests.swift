import Raft
import Testing

@testable import KVStore

/// Model-based tests of the multi-version store: seeded random sequences of puts, deletes, ranges,
/// transactions and compactions run against `MVCCStore` and against a naive reference that keeps
/// the whole key space of every revision in a list. After every step both must answer every read
/// at every revision alike, errors included.
@Suite struct MVCCModelTests {
  @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8] as [UInt64])
  func theStoreAgreesWithTheNaiveModel(seed: UInt64) throws {
    var random = SplitMix64(seed: seed)
    var store = MVCCStore()
    var model = NaiveMVCC()
    for step in 0..<600 {
      let operation = Self.randomOperation(&random, model: model)
      let expected = Result { () throws(MVCCError) in try model.apply(operation) }
      let actual = Result { () throws(MVCCError) in try Self.apply(operation, to: &store) }
      #expect(actual == expected, "seed \(seed) step \(step): \(operation)")
      #expect(store.revision == model.revision, "seed \(seed) step \(step)")
      #expect(store.liveKeyCount == model.current.count, "seed \(seed) step \(step)")
      #expect(store.leaseIDs == model.leases.keys.sorted(), "seed \(seed) step \(step): leases")
      for id in model.leases.keys {
        let expectedLease = model.leases[id].map {
          Lease(id: id, grantedTTL: $0.ttl, checkpointedTTL: $0.checkpoint, keys: model.keys(of: id))
        }
        #expect(store.lease(id) == expectedLease, "seed \(seed) step \(step): lease \(id)")
      }
      // A watcher of a random range from a random revision sees the same changes.
      let watched = Self.randomWatch(&random, model: model)
      #expect(
        Result { () throws(MVCCError) in
          try store.events(in: watched.range, from: watched.start, prevKV: watched.prevKV)
        }
          == Result { () throws(MVCCError) in
            try model.events(in: watched.range, from: watched.start, prevKV: watched.prevKV)
          },
        "seed \(seed) step \(step): watch \(watched)")
      // Every revision, compacted ones included, answers the same full scan.
      if step % 25 == 0 {
        for revision in 0...(model.revision + 1) {
          var scan = RangeRequest(range: KeyRange(key: [0], rangeEnd: [0]))
          scan.revision = revision
          #expect(
            Result { () throws(MVCCError) in try store.range(scan) }
              == Result { () throws(MVCCError) in try model.range(scan) },
            "seed \(seed) step \(step): scan at \(revision)")
        }
      }
    }
    #expect(model.revision > 100, "the sequence made history")
  }

  /// A frozen copy keeps answering from the state it was taken at while the original moves on.
  @Test func aCopyIsFrozen() throws {
    var store = MVCCStore()
    for i in 0..<1_000 { _ = try store.put(PutRequest(key: Array("k\(i)".utf8), value: [1])) }
    let frozen = store
    _ = try store.deleteRange(DeleteRangeRequest(range: .prefix(Array("k".utf8))))
    #expect(try frozen.range(RangeRequest(range: .prefix(Array("k".utf8)))).count == 1_000)
    #expect(try store.range(RangeRequest(range: .prefix(Array("k".utf8)))).count == 0)
  }

  /// A transaction that fails changes nothing: one that fails after it wrote (the store kept a
  /// copy to go back to), and a single put that fails before it writes (the writer took the store
  /// itself, to write in place).
  @Test func aFailedTransactionChangesNothing() throws {
    var store = MVCCStore()
    let (a, b) = (Array("a".utf8), Array("b".utf8))
    _ = try store.put(PutRequest(key: a, value: [1]))
    let before = store
    var missing = PutRequest(key: b, value: [])
    missing.ignoreValue = true
    #expect(throws: MVCCError.keyNotFound) {
      try store.txn(TxnRequest(success: [.put(PutRequest(key: a, value: [2])), .put(missing)]))
    }
    #expect(throws: MVCCError.keyNotFound) { try store.put(missing) }
    #expect(throws: MVCCError.leaseNotFound) { try store.put(PutRequest(key: a, value: [3], lease: 9)) }
    let everything = RangeRequest(range: KeyRange(key: [0], rangeEnd: [0]))
    #expect(store.revision == before.revision)
    #expect(try store.range(everything) == before.range(everything))
    #expect(try store.events(in: everything.range, from: 1) == before.events(in: everything.range, from: 1))
    _ = try store.put(PutRequest(key: b, value: [4]))
    #expect(try store.range(everything).count == 2 && before.range(everything).count == 1)
  }

  /// Every compare, nested ones included, reads the store as it was before the transaction (etcd's
  /// compareToPath), while a range reads what the transaction wrote so far.
  @Test func nestedComparesReadTheStoreBeforeTheTransaction() throws {
    var store = MVCCStore()
    let a = Array("a".utf8)
    let nested = TxnRequest(
      compare: [Compare(range: KeyRange(key: a), .equal, .value([1]))],
      success: [.put(PutRequest(key: Array("then".utf8), value: [1]))],
      failure: [.put(PutRequest(key: Array("else".utf8), value: [1]))])
    let response = try store.txn(
      TxnRequest(success: [
        .put(PutRequest(key: a, value: [1])), .range(RangeRequest(range: KeyRange(key: a))), .txn(nested),
      ]))
    guard case .range(let read) = response.responses[1], case .txn(let inner) = response.responses[2] else {
      Issue.record("unexpected responses \(response)")
      return
    }
    #expect(read.kvs.map(\.value) == [[1]], "the range sees the transaction's own put")
    #expect(!inner.succeeded, "the nested compare sees \"a\" absent, as before the transaction")
    #expect(try store.range(RangeRequest(range: KeyRange(key: Array("else".utf8)))).count == 1)
    var future = RangeRequest(range: KeyRange(key: a))
    future.revision = store.revision + 1
    #expect(throws: MVCCError.futureRevision) {
      try store.txn(
        TxnRequest(success: [.put(PutRequest(key: Array("b".utf8), value: [2])), .range(future)]))
    }
  }

  @Test func theIndexStaysBalanced() {
    var map = SortedMap<Int>()
    for i in 0..<100_000 { map.insert(i, forKey: Array(String(i, radix: 16).utf8)) }
    #expect(map.count == 100_000)
    // A B-tree of 33 children at most and 9 at least (but the root): 4 or 5 levels for 100,000 keys.
    #expect(
      map.height >= SortedMapTests.heightFloor(100_000) && map.height <= SortedMapTests.heightBound(100_000))
    #expect(map.invariantViolations() == [])
    for i in stride(from: 0, to: 100_000, by: 2) { map.remove(Array(String(i, radix: 16).utf8)) }
    #expect(map.count == 50_000)
    #expect(map.height <= SortedMapTests.heightBound(50_000))
    #expect(map.invariantViolations() == [])
    #expect(
      map.count(from: Array("1".utf8), below: Array("2".utf8)) == Self.countHexWithPrefix("1", odd: true))
  }

  static func countHexWithPrefix(_ prefix: String, odd: Bool) -> Int {
    (0..<100_000).filter { $0 % 2 == 1 && String($0, radix: 16).hasPrefix(prefix) }.count
  }

  // MARK: - The generator

  static func randomWatch(_ random: inout SplitMix64, model: NaiveMVCC) -> (
    range: KeyRange, start: Int64, prevKV: Bool
  ) {
    func pick(_ n: Int) -> Int { Int(random.next() % UInt64(n)) }
    let range: KeyRange =
      switch pick(3) {
      case 0: KeyRange(key: keys[pick(keys.count)])
      case 1: .prefix(keys[pick(keys.count)])
      default: KeyRange(key: [0], rangeEnd: [0])
      }
    return (range, Int64(pick(Int(model.revision) + 3)) - 1, pick(2) == 0)
  }

  static let keys: [[UInt8]] =
    ["a", "b", "c", "d", "e", "f", "g", "h", "ab", "abc", "b0"].map { Array($0.utf8) } + [
      [0xFF], [0xFF, 0xFF],
    ]

  static func randomOperation(_ random: inout SplitMix64, model: NaiveMVCC) -> ModelOperation {
    func pick(_ n: Int) -> Int { Int(random.next() % UInt64(n)) }
    func key() -> [UInt8] { keys[pick(keys.count)] }
    func range() -> KeyRange {
      switch pick(5) {
      case 0, 1: return KeyRange(key: key())
      case 2: return .prefix(key())
      case 3: return KeyRange(key: key(), rangeEnd: [0])
      default:
        let (a, b) = (key(), key())
        return compareKeys(a, b) <= 0 ? KeyRange(key: a, rangeEnd: b) : KeyRange(key: b, rangeEnd: a)
      }
    }
    func rangeRequest() -> RangeRequest {
      var request = RangeRequest(range: range())
      if pick(3) == 0 { request.limit = Int64(pick(4)) }
      if pick(3) == 0 { request.revision = Int64(pick(Int(model.revision) + 3)) - 1 }
      request.sortOrder = [.none, .ascend, .descend][pick(3)]
      request.sortTarget = [.key, .version, .create, .mod, .value][pick(5)]
      request.keysOnly = pick(6) == 0
      request.countOnly = pick(8) == 0
      if pick(5) == 0 { request.minModRevision = Int64(pick(Int(model.revision) + 2)) }
      if pick(5) == 0 { request.maxCreateRevision = Int64(pick(Int(model.revision) + 2)) }
      return request
    }
    func put() -> PutRequest {
      var request = PutRequest(
        key: key(), value: Array("v\(pick(5))".utf8), lease: Int64(pick(3)) * Int64(pick(3)))
      request.prevKV = pick(2) == 0
      request.ignoreValue = pick(8) == 0
      request.ignoreLease = pick(8) == 0
      return request
    }
    func compare() -> Compare {
      let target: Compare.Target =
        switch pick(5) {
        case 0: .value(Array("v\(pick(5))".utf8))
        case 1: .version(Int64(pick(4)))
        case 2: .create(Int64(pick(Int(model.revision) + 2)))
        case 3: .mod(Int64(pick(Int(model.revision) + 2)))
        default: .lease(Int64(pick(3)))
        }
      return Compare(
        range: pick(4) == 0 ? range() : KeyRange(key: key()), [.equal, .notEqual, .less, .greater][pick(4)],
        target)
    }
    func operations(depth: Int) -> [RequestOp] {
      (0..<pick(4)).map { _ in
        switch pick(depth > 0 ? 4 : 3) {
        case 0: .range(rangeRequest())
        case 1: .put(put())
        case 2: .deleteRange(DeleteRangeRequest(range: range(), prevKV: pick(2) == 0))
        default:
          .txn(
            TxnRequest(
              compare: [compare()], success: operations(depth: depth - 1),
              failure: operations(depth: depth - 1)))
        }
      }
    }
    switch pick(24) {
    case 20: return .grant(Int64(pick(6)), ttl: Int64(pick(60)))
    case 21, 22: return .revoke(Int64(pick(6)))
    case 23: return .checkpoint(Int64(pick(6)), ttl: Int64(pick(60)))
    case 0..<7: return .put(put())
    case 7..<9: return .delete(DeleteRangeRequest(range: range(), prevKV: pick(2) == 0))
    case 9..<13: return .range(rangeRequest())
    case 13..<19:
      return .txn(
        TxnRequest(
          compare: (0..<pick(3)).map { _ in compare() }, success: operations(depth: 1),
          failure: operations(depth: 1)))
    default: return .compact(Int64(pick(Int(model.revision) + 2)))
    }
  }

  static func apply(_ operation: ModelOperation, to store: inout MVCCStore) throws(MVCCError) -> ModelAnswer {
    switch operation {
    case .put(let request): .put(try store.put(request))
    case .delete(let request): .delete(try store.deleteRange(request))
    case .range(let request): .range(try store.range(request))
    case .txn(let request): .txn(try store.txn(request))
    case .compact(let revision): .compacted(try store.compact(revision))
    case .grant(let id, let ttl): .compacted(try store.grant(lease: id, ttl: ttl))
    case .revoke(let id): .revoked(try store.revoke(lease: id))
    case .checkpoint(let id, let ttl): .compacted(try store.checkpoint(lease: id, remainingTTL: ttl))
    }
  }
}

enum ModelOperation: CustomStringConvertible {
  case put(PutRequest)
  case delete(DeleteRangeRequest)
  case range(RangeRequest)
  case txn(TxnRequest)
  case compact(Int64)
  case grant(Int64, ttl: Int64)
  case revoke(Int64)
  case checkpoint(Int64, ttl: Int64)

  var description: String {
    switch self {
    case .put(let r): "put \(String(decoding: r.key, as: UTF8.self))"
    case .delete(let r): "delete \(r.range)"
    case .range(let r): "range \(r)"
    case .txn(let r): "txn \(r)"
    case .compact(let revision): "compact \(revision)"
    case .grant(let id, let ttl): "grant \(id) ttl \(ttl)"
    case .revoke(let id): "revoke \(id)"
    case .checkpoint(let id, let ttl): "checkpoint \(id) \(ttl)"
    }
  }
}

enum ModelAnswer: Equatable {
  case put(PutResponse)
  case delete(DeleteRangeResponse)
  case range(RangeResponse)
  case txn(TxnResponse)
  case compacted(Void)
  case revoked(Int64)

  static func == (a: ModelAnswer, b: ModelAnswer) -> Bool {
    switch (a, b) {
    case (.put(let x), .put(let y)): x == y
    case (.delete(let x), .delete(let y)): x == y
    case (.range(let x), .range(let y)): x == y
    case (.txn(let x), .txn(let y)): x == y
    case (.compacted, .compacted): true
    case (.revoked(let x), .revoked(let y)): x == y
    default: false
    }
  }
}

/// The reference: the whole key space of every revision, as a dictionary per revision, and etcd's
/// rules written the plain way.
struct NaiveMVCC {
  struct Record: Equatable {
    var createRevision: Int64
    var modRevision: Int64
    var version: Int64
    var value: [UInt8]
    var lease: Int64
  }

  /// `states[r]` is the key space at revision r.
  var states: [[[UInt8]: Record]] = [[:]]
  /// `changes[r]` are the events revision r made, in order, each with its previous key-value.
  var changes: [[WatchEvent]] = [[]]
  var compactRevision: Int64 = 0
  /// Granted TTL and checkpoint per lease; a lease's keys are derived from the key space (the
  /// live keys whose lease it is), not kept.
  var leases: [Int64: (ttl: Int64, checkpoint: Int64)] = [:]

  func keys(of lease: Int64) -> [[UInt8]] {
    current.filter { $0.value.lease == lease }.map(\.key).sorted { compareKeys($0, $1) < 0 }
  }
  var revision: Int64 { Int64(states.count - 1) }
  var current: [[UInt8]: Record] { states.last! }

  func kvs(_ range: KeyRange, in state: [[UInt8]: Record]) -> [MVCCKeyValue] {
    state.filter { range.contains($0.key) }.map {
      MVCCKeyValue(
        key: $0.key, createRevision: $0.value.createRevision, modRevision: $0.value.modRevision,
        version: $0.value.version, value: $0.value.value, lease: $0.value.lease)
    }.sorted { compareKeys($0.key, $1.key) < 0 }
  }

  func range(_ request: RangeRequest) throws(MVCCError) -> RangeResponse {
    let at = request.revision > 0 ? request.revision : revision
    guard at <= revision else { throw .futureRevision }
    guard at >= compactRevision else { throw .compacted(compactRevision: compactRevision) }
    return range(request, in: states[Int(at)])
  }

  func range(_ request: RangeRequest, in state: [[UInt8]: Record]) -> RangeResponse {
    var all = kvs(request.range, in: state)
    let count = Int64(all.count)
    if request.countOnly { return RangeResponse(kvs: [], more: false, count: count) }
    let filtered =
      request.minModRevision != 0 || request.maxModRevision != 0 || request.minCreateRevision != 0
      || request.maxCreateRevision != 0
    if request.limit > 0 && !filtered && request.sortOrder == .none {
      all = Array(all.prefix(Int(request.limit) + 1))  // etcd fetches limit+1 by key, then sorts.
    }
    all.removeAll {
      (request.minModRevision != 0 && $0.modRevision < request.minModRevision)
        || (request.maxModRevision != 0 && $0.modRevision > request.maxModRevision)
        || (request.minCreateRevision != 0 && $0.createRevision < request.minCreateRevision)
        || (request.maxCreateRevision != 0 && $0.createRevision > request.maxCreateRevision)
    }
    let order: RangeRequest.SortOrder =
      request.sortTarget != .key && request.sortOrder == .none ? .ascend : request.sortOrder
    func value(_ kv: MVCCKeyValue) -> [Int64] {
      switch request.sortTarget {
      case .key: kv.key.map(Int64.init) + [-1]
      case .version: [kv.version]
      case .create: [kv.createRevision]
      case .mod: [kv.modRevision]
      case .value: kv.value.map(Int64.init) + [-1]
      }
    }
    // Ties keep key order (an index in `all` breaks them).
    if order != .none {
      all = all.enumerated().sorted { a, b in
        let (x, y) = (value(a.element), value(b.element))
        if x != y {
          return order == .ascend ? x.lexicographicallyPrecedes(y) : y.lexicographicallyPrecedes(x)
        }
        return a.offset < b.offset
      }.map(\.element)
    }
    var more = false
    if request.limit > 0 && all.count > Int(request.limit) {
      all = Array(all.prefix(Int(request.limit)))
      more = true
    }
    if request.keysOnly {
      all = all.map {
        var kv = $0; kv.value = []; return kv
      }
    }
    return RangeResponse(kvs: all, more: more, count: count)
  }

  mutating func apply(_ operation: ModelOperation) throws(MVCCError) -> ModelAnswer {
    switch operation {
    case .put(let request):
      guard case .put(let response) = try txn(TxnRequest(success: [.put(request)])).responses[0] else {
        fatalError()
      }
      return .put(response)
    case .delete(let request):
      guard
        case .deleteRange(let response) = try txn(TxnRequest(success: [.deleteRange(request)])).responses[0]
      else { fatalError() }
      return .delete(response)
    case .range(let request):
      return .range(try range(request))
    case .txn(let request):
      return .txn(try txn(request))
    case .grant(let id, let ttl):
      guard id > 0 else { throw .invalidLeaseID }
      guard leases[id] == nil else { throw .leaseExists }
      leases[id] = (ttl, 0)
      return .compacted(())
    case .checkpoint(let id, let ttl):
      guard leases[id] != nil else { throw .leaseNotFound }
      leases[id]!.checkpoint = ttl
      return .compacted(())
    case .revoke(let id):
      guard leases[id] != nil else { throw .leaseNotFound }
      let keys = keys(of: id)
      if !keys.isEmpty {
        _ = try txn(
          TxnRequest(success: keys.map { .deleteRange(DeleteRangeRequest(range: KeyRange(key: $0))) }))
      }
      leases[id] = nil
      return .revoked(Int64(keys.count))
    case .compact(let target):
      guard target > compactRevision else { throw .compacted(compactRevision: compactRevision) }
      guard target <= revision else { throw .futureRevision }
      compactRevision = target
      return .compacted(())
    }
  }

  mutating func txn(_ request: TxnRequest) throws(MVCCError) -> TxnResponse {
    try MVCCStore.checkIntervals(request.success)
    try MVCCStore.checkIntervals(request.failure)
    var working = current
    var changed = false
    var made: [WatchEvent] = []
    let response = try run(request, on: &working, changed: &changed, events: &made, newRevision: revision + 1)
    if changed {
      states.append(working)
      changes.append(made)
    }
    return response
  }

  func events(in range: KeyRange, from start: Int64, prevKV: Bool) throws(MVCCError) -> [WatchEvent] {
    let start = start > 0 ? start : revision + 1
    guard start > compactRevision else { throw .compacted(compactRevision: compactRevision) }
    guard start <= revision else { return [] }
    return changes[Int(start)...].flatMap { $0 }.filter { range.contains($0.kv.key) }.map {
      var event = $0
      if !prevKV { event.prevKV = nil }
      return event
    }
  }

  func run(
    _ request: TxnRequest, on state: inout [[UInt8]: Record], changed: inout Bool, events: inout [WatchEvent],
    newRevision: Int64
  ) throws(MVCCError) -> TxnResponse {
    let succeeded = request.compare.allSatisfy { compare in
      let found = kvs(compare.range, in: current)  // Before the transaction wrote anything.
      if found.isEmpty {
        if case .value = compare.target { return false }
        return Self.holds(
          compare, MVCCKeyValue(key: [], createRevision: 0, modRevision: 0, version: 0, value: [], lease: 0))
      }
      return found.allSatisfy { Self.holds(compare, $0) }
    }
    var responses: [ResponseOp] = []
    for operation in succeeded ? request.success : request.failure {
      switch operation {
      case .range(let range):
        if range.revision > 0 {
          guard range.revision <= newRevision - 1 else { throw .futureRevision }
          guard range.revision >= compactRevision else { throw .compacted(compactRevision: compactRevision) }
          responses.append(.range(self.range(range, in: states[Int(range.revision)])))
        } else {
          responses.append(.range(self.range(range, in: state)))
        }
      case .put(let put):
        guard !put.key.isEmpty else { throw .emptyKey }
        let existing = state[put.key]
        if (put.ignoreValue || put.ignoreLease) && existing == nil { throw .keyNotFound }
        let lease = put.ignoreLease ? existing!.lease : put.lease
        if lease != 0 && leases[lease] == nil { throw .leaseNotFound }
        let previous = existing.map {
          MVCCKeyValue(
            key: put.key, createRevision: $0.createRevision, modRevision: $0.modRevision, version: $0.version,
            value: $0.value, lease: $0.lease)
        }
        let record = Record(
          createRevision: existing?.createRevision ?? newRevision, modRevision: newRevision,
          version: (existing?.version ?? 0) + 1, value: put.ignoreValue ? existing!.value : put.value,
          lease: lease)
        state[put.key] = record
        changed = true
        events.append(
          WatchEvent(
            type: .put,
            kv: MVCCKeyValue(
              key: put.key, createRevision: record.createRevision, modRevision: newRevision,
              version: record.version,
              value: record.value, lease: record.lease), prevKV: previous))
        responses.append(.put(PutResponse(prevKV: put.prevKV ? previous : nil)))
      case .deleteRange(let delete):
        guard !delete.range.key.isEmpty else { throw .emptyKey }
        let doomed = kvs(delete.range, in: state)
        for kv in doomed {
          state[kv.key] = nil
          events.append(
            WatchEvent(
              type: .delete,
              kv: MVCCKeyValue(
                key: kv.key, createRevision: 0, modRevision: newRevision, version: 0, value: [], lease: 0),
              prevKV: kv))
        }
        if !doomed.isEmpty { changed = true }
        responses.append(
          .deleteRange(
            DeleteRangeResponse(deleted: Int64(doomed.count), prevKVs: delete.prevKV ? doomed : [])))
      case .txn(let nested):
        responses.append(
          .txn(try run(nested, on: &state, changed: &changed, events: &events, newRevision: newRevision)))
      }
    }
    return TxnResponse(succeeded: succeeded, responses: responses)
  }

  static func holds(_ compare: Compare, _ kv: MVCCKeyValue) -> Bool {
    func order<T: Comparable>(_ a: T, _ b: T) -> Int { a < b ? -1 : (a > b ? 1 : 0) }
    let result: Int =
      switch compare.target {
      case .value(let value): kv.value.lexicographicallyPrecedes(value) ? -1 : (kv.value == value ? 0 : 1)
      case .version(let version): order(kv.version, version)
      case .create(let create): order(kv.createRevision, create)
      case .mod(let mod): order(kv.modRevision, mod)
      case .lease(let lease): order(kv.lease, lease)
      }
    switch compare.result {
    case .equal: return result == 0
    case .notEqual: return result != 0
    case .less: return result < 0
    case .greater: return result > 0
    }
  }
}
