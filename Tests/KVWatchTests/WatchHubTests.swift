import KVStore
import KVWatch
import Testing

/// The hub against the store's own history: random workloads, watchers of random ranges from random
/// revisions, readers that stall and resume, compactions. What every reader received must be exactly
/// the history of its range from its start (ordered, no repeat, no gap), with no revision split
/// across messages.
@Suite struct WatchHubTests {
  @Test(arguments: [1, 2, 3, 4, 5, 6] as [UInt64])
  func everyReaderGetsExactlyItsHistory(seed: UInt64) throws {
    var random = Random(seed: seed)
    var store = MVCCStore()
    // The same writes without compaction: the history every reader is checked against.
    var reference = MVCCStore()
    var limits = WatchLimits()
    limits.maxPendingBytesPerWatcher = 6_000
    limits.catchUpEvents = 7
    limits.catchUpScannedChanges = 20
    var hub = WatchHub(store: store, limits: limits)
    var readers: [Reader] = []
    for step in 0..<800 {
      switch random.next(100) {
      case 0..<55:
        let operation = Self.randomWrite(&random)
        _ = try? Self.apply(operation, to: &store)
        _ = try? Self.apply(operation, to: &reference)
        if random.next(3) == 0 { hub.publish(store) }
      case 55..<60 where readers.count < 12:
        var request = WatchRequest(range: Self.randomRange(&random))
        request.startRevision =
          [0, 1, store.revision, store.revision + 2, store.revision / 2][random.next(5)]
        request.prevKV = random.next(2) == 0
        request.filterPuts = random.next(6) == 0
        request.filterDeletes = !request.filterPuts && random.next(6) == 0
        var reader = Reader(request: request, publishedAtStart: hub.store.revision)
        reader.id = try hub.create(request)
        readers.append(reader)
      case 60..<70:
        guard !readers.isEmpty else { break }
        let index = random.next(readers.count)
        readers[index].writable.toggle()
        if let id = readers[index].id { hub.setWritable(id, readers[index].writable) }
      case 70..<71 where store.revision > store.compactRevision + 20:
        // Compact part of the way: readers replaying the old part are cut, the others are not.
        let revision =
          store.compactRevision + 1 + Int64(random.next(Int(store.revision - store.compactRevision) / 2))
        try store.compact(revision)
      default:
        hub.catchUp()
        for (id, responses) in hub.takeDeliveries() {
          guard let index = readers.firstIndex(where: { $0.id == id }) else {
            Issue.record("seed \(seed) step \(step): messages for unknown watch \(id)")
            continue
          }
          try readers[index].receive(responses, hub: &hub, seed: seed)
        }
      }
    }
    // Let every reader drain to the end.
    hub.publish(store)
    for index in readers.indices where !readers[index].writable {
      readers[index].writable = true
      if let id = readers[index].id { hub.setWritable(id, true) }
    }
    for _ in 0..<10_000 {
      hub.catchUp()
      let deliveries = hub.takeDeliveries()
      if deliveries.isEmpty && !hub.hasCatchUpWork { break }
      for (id, responses) in deliveries {
        let index = try #require(readers.firstIndex { $0.id == id })
        try readers[index].receive(responses, hub: &hub, seed: seed)
      }
    }
    #expect(store.revision > 200, "seed \(seed): the workload made history")
    var resumed = 0
    var received = 0
    for reader in readers {
      resumed += reader.resumes
      received += reader.events.count
      let request = reader.request
      // The history a watch from `start` owes: from its start (or from after the compaction that cut
      // it, which the reader was told of) through the end.
      let start = reader.restartedAfterCompaction ?? reader.effectiveStart
      var expected = try reference.events(in: request.range, from: start, prevKV: request.prevKV)
      expected.removeAll { $0.type == .put ? request.filterPuts : request.filterDeletes }
      #expect(
        reader.events == expected,
        "seed \(seed): watch of \(request.range) from \(request.startRevision) got \(reader.events.count) events, expected \(expected.count)"
      )
      // No message splits a revision.
      for message in reader.messages where !message.isEmpty {
        for revision in [message.first!.kv.modRevision, message.last!.kv.modRevision] {
          let all = expected.filter { $0.kv.modRevision == revision }
          #expect(all.allSatisfy { message.contains($0) }, "seed \(seed): revision \(revision) split")
        }
      }
    }
    #expect(received > 300, "seed \(seed): watchers received \(received) events")
    #expect(resumed > 0 || seed > 3, "seed \(seed): some reader was too slow and resumed")
  }

  @Test func aSlowWatcherIsCancelledWithWhereToResume() throws {
    var store = MVCCStore()
    var limits = WatchLimits()
    limits.maxPendingBytesPerWatcher = 2_000
    var hub = WatchHub(store: store, limits: limits)
    let slow = try hub.create(WatchRequest(range: .prefix(Array("a".utf8))))
    let fast = try hub.create(WatchRequest(range: .prefix(Array("a".utf8))))
    _ = hub.takeDeliveries()  // Both created messages.
    _ = try store.put(PutRequest(key: Array("a1".utf8), value: [1]))
    hub.publish(store)
    #expect(hub.takeDeliveries().map(\.1.count) == [1, 1])
    hub.setWritable(slow, false)
    var fastEvents = 0
    for i in 0..<100 {
      _ = try store.put(PutRequest(key: Array("a\(i)".utf8), value: Array(repeating: 7, count: 100)))
      hub.publish(store)
      for (id, responses) in hub.takeDeliveries() {
        #expect(id == fast, "the stalled watcher gets nothing while it cannot read")
        fastEvents += responses.flatMap(\.events).count
      }
    }
    #expect(fastEvents == 100, "the fast watcher is not held up")
    hub.setWritable(slow, true)
    let final = try #require(hub.takeDeliveries().first { $0.0 == slow }?.1)
    #expect(final.count == 1)
    guard case .canceled(let reason, let compactRevision, let resume) = final[0].kind else {
      Issue.record("expected a cancel, got \(final)")
      return
    }
    #expect(reason.contains("too slow") && reason.contains("revision 2"))
    #expect(compactRevision == 0)
    #expect(resume == 2, "it had everything through revision 1")
    #expect(hub.watcherCount == 1, "the cancelled watcher is gone")
    // Resuming there replays what it missed.
    _ = try hub.create(WatchRequest(range: .prefix(Array("a".utf8)), startRevision: resume))
    var replayed: [WatchEvent] = []
    for _ in 0..<100 {
      hub.catchUp()
      for (_, responses) in hub.takeDeliveries() { replayed += responses.flatMap(\.events) }
    }
    #expect(replayed.map(\.kv.modRevision) == Array(2...101))
  }

  @Test func aStartBelowTheCompactionIsCancelledWithTheCompactedRevision() throws {
    var store = MVCCStore()
    for i in 0..<10 { _ = try store.put(PutRequest(key: [UInt8(65 + i)], value: [1])) }
    try store.compact(5)
    var hub = WatchHub(store: store)
    let id = try hub.create(WatchRequest(range: KeyRange(key: [65]), startRevision: 5))
    let messages = hub.takeDeliveries()
    #expect(messages.count == 1 && messages[0].0 == id)
    #expect(
      messages[0].1.map(\.kind) == [
        .created,
        .canceled(reason: "watch start revision 5 has been compacted", compactRevision: 5, resumeRevision: 6),
      ])
    #expect(hub.watcherCount == 0)
    #expect(throws: WatchError.emptyKey) { try hub.create(WatchRequest(range: KeyRange(key: []))) }
  }

  @Test func anInstalledSnapshotPastAWatcherCancelsIt() throws {
    var store = MVCCStore()
    var hub = WatchHub(store: store)
    let id = try hub.create(WatchRequest(range: .prefix([])))
    _ = hub.takeDeliveries()
    for i in 0..<10 { _ = try store.put(PutRequest(key: [UInt8(65 + i)], value: [1])) }
    try store.compact(6)
    hub.publish(store)  // As after a snapshot install: revisions 1...6 never reached this hub.
    let messages = try #require(hub.takeDeliveries().first { $0.0 == id }?.1)
    #expect(
      messages.map(\.kind) == [
        .canceled(
          reason: "revisions the watch needed were compacted before this member received them",
          compactRevision: 6, resumeRevision: 7)
      ])
  }

  @Test func progressCarriesTheCurrentRevisionToQuietWatchers() throws {
    var store = MVCCStore()
    var hub = WatchHub(store: store)
    let quiet = try hub.create(WatchRequest(range: KeyRange(key: Array("q".utf8)), progressNotify: true))
    let busy = try hub.create(WatchRequest(range: KeyRange(key: Array("b".utf8)), progressNotify: true))
    let silent = try hub.create(WatchRequest(range: KeyRange(key: Array("q".utf8))))
    _ = hub.takeDeliveries()
    _ = try store.put(PutRequest(key: Array("b".utf8), value: [1]))
    hub.publish(store)
    hub.progressTick()
    let messages = Dictionary(uniqueKeysWithValues: hub.takeDeliveries())
    #expect(messages[quiet]?.map(\.kind) == [.progress])
    #expect(messages[quiet]?.first?.revision == 1)
    #expect(messages[busy]?.map(\.kind) == [.events], "events since the last tick: no progress")
    #expect(messages[silent] == nil, "did not ask for progress")
    hub.requestProgress(silent)
    #expect(hub.takeDeliveries().map(\.1) == [[WatchResponse(watchID: silent, kind: .progress, revision: 1)]])
  }

  @Test func aReplayNeverSplitsARevision() throws {
    var store = MVCCStore()
    var limits = WatchLimits()
    limits.catchUpEvents = 3
    var puts: [RequestOp] = []
    for i in 0..<10 { puts.append(.put(PutRequest(key: [UInt8(65 + i)], value: [1]))) }
    _ = try store.txn(TxnRequest(success: puts))
    _ = try store.put(PutRequest(key: [65], value: [2]))
    var hub = WatchHub(store: store, limits: limits)
    _ = try hub.create(WatchRequest(range: .prefix([]), startRevision: 1))
    var messages: [[WatchEvent]] = []
    for _ in 0..<5 {
      hub.catchUp()
      for (_, responses) in hub.takeDeliveries() {
        messages += responses.map(\.events).filter { !$0.isEmpty }
      }
    }
    #expect(messages.map(\.count) == [10, 1], "the ten puts of revision 1 arrive together")
  }

  // MARK: - Support

  /// A watcher's client: what it received, and how it resumed.
  struct Reader {
    var request: WatchRequest
    var id: WatchID?
    var writable = true
    var events: [WatchEvent] = []
    var messages: [[WatchEvent]] = []
    var resumes = 0
    /// When the hub said the history it needed was compacted: the watch restarted after it.
    var restartedAfterCompaction: Int64?
    var lastRevision: Int64 = 0
    let effectiveStart: Int64

    init(request: WatchRequest, publishedAtStart: Int64) {
      self.request = request
      effectiveStart = request.startRevision > 0 ? request.startRevision : publishedAtStart + 1
    }

    mutating func receive(_ responses: [WatchResponse], hub: inout WatchHub, seed: UInt64) throws {
      for response in responses {
        #expect(response.watchID == id)
        switch response.kind {
        case .created, .progress:
          break
        case .events:
          for event in response.events {
            #expect(event.kv.modRevision > lastRevision || event.kv.modRevision == lastRevision, "ordered")
            lastRevision = event.kv.modRevision
          }
          events += response.events
          messages.append(response.events)
        case .canceled(_, let compactRevision, let resume):
          var again = request
          if compactRevision > 0 {
            // The history is gone: start after the compaction; the check starts there too.
            again.startRevision = compactRevision + 1
            restartedAfterCompaction = compactRevision + 1
            events.removeAll { $0.kv.modRevision <= compactRevision }
          } else {
            again.startRevision = resume
            resumes += 1
          }
          id = try hub.create(again)
          hub.setWritable(id!, writable)
        }
      }
    }
  }

  enum Write {
    case put([UInt8], [UInt8])
    case delete(KeyRange)
    case txn([RequestOp])
  }

  static func apply(_ write: Write, to store: inout MVCCStore) throws {
    switch write {
    case .put(let key, let value): _ = try store.put(PutRequest(key: key, value: value))
    case .delete(let range): _ = try store.deleteRange(DeleteRangeRequest(range: range))
    case .txn(let operations): _ = try store.txn(TxnRequest(success: operations))
    }
  }

  static func randomKey(_ random: inout Random) -> [UInt8] {
    [UInt8(97 + random.next(4)), UInt8(48 + random.next(5))]
  }

  static func randomWrite(_ random: inout Random) -> Write {
    switch random.next(10) {
    case 0: return .delete(randomRange(&random))
    case 1:
      var keys = Set<[UInt8]>()
      for _ in 0..<(1 + random.next(5)) { keys.insert(randomKey(&random)) }
      return .txn(
        keys.sorted { $0.lexicographicallyPrecedes($1) }.map { .put(PutRequest(key: $0, value: [1])) })
    default:
      return .put(randomKey(&random), Array(repeating: UInt8(random.next(256)), count: random.next(200)))
    }
  }

  static func randomRange(_ random: inout Random) -> KeyRange {
    switch random.next(3) {
    case 0: return KeyRange(key: randomKey(&random))
    case 1: return .prefix([UInt8(97 + random.next(4))])
    default: return .prefix([])
    }
  }
}

/// SplitMix64, for seeded workloads.
struct Random {
  var state: UInt64
  init(seed: UInt64) { state = seed }
  mutating func next(_ bound: Int) -> Int {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return Int((z ^ (z >> 31)) % UInt64(bound))
  }
}
