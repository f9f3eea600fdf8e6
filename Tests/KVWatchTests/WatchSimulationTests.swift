import KVStore
import KVWatch
import Raft
import RaftSimulation
import Testing

/// Watch streams under the simulator's faults. Each simulated node runs a multi-version store fed by
/// what its Raft group applies, and a `WatchHub` over it, as a server does; clients watch random
/// ranges from random revisions on random nodes, stall and resume, and when their node crashes they
/// reconnect to another from the revision after the last they received. Every client's stream must
/// be exactly the committed history of its range from its start: ordered, no repeat, no gap,
/// nothing invented, the changes of one revision in one message.
@Suite struct WatchSimulationTests {
  @Test func watchStreamsMatchTheCommittedHistory() throws {
    var totals = WatchChecker.Counts()
    for seed: UInt64 in 1...60 {
      var options = SimulationOptions(seed: seed, nodeCount: 3)
      options.faultPhaseTicks = 400
      let checker = WatchChecker(seed: seed)
      let report = ClusterSimulation(options: options, observer: checker).run()
      #expect(report.violation == nil, "seed \(seed): \(report.violation.map { "\($0)" } ?? "")")
      checker.finish()
      for problem in checker.problems.prefix(5) { Issue.record("seed \(seed): \(problem)") }
      totals.add(checker.counts)
    }
    print("watch simulation: \(totals)")
    // The faults reached the watchers: every path a stream can take was taken.
    #expect(totals.events > 10_000, "\(totals)")
    #expect(totals.crashReconnects > 0 && totals.voluntaryReconnects > 0, "\(totals)")
    #expect(totals.compactionCancels > 0 && totals.slowCancels > 0, "\(totals)")
    #expect(totals.snapshotJumps > 0 && totals.replayedPieces > 0, "\(totals)")
  }

  /// The checker bites: a client that loses one event in thirteen is caught.
  @Test func aGapIsCaught() throws {
    var caught = 0
    for seed: UInt64 in 1...10 {
      let checker = WatchChecker(seed: seed)
      checker.plantDroppedEvent = true
      _ = ClusterSimulation(options: SimulationOptions(seed: seed, nodeCount: 3), observer: checker).run()
      checker.finish()
      if !checker.problems.isEmpty { caught += 1 }
    }
    #expect(caught > 0, "a client missing an event is reported")
  }
}

/// The application side of the simulated cluster, and the clients that watch it.
final class WatchChecker: SimulationObserver {
  struct Member {
    var store = MVCCStore()
    var applied: UInt64 = 0
    var hub: WatchHub
  }

  struct Client {
    var request: WatchRequest
    var node: NodeID?
    var watchID: WatchID?
    var writable = true
    /// The first revision it has not received for sure: where it resumes.
    var next: Int64 = 0
    /// Where its expected history starts: its start, or after the compaction that cut it.
    var expectedStart: Int64 = 0
    var events: [WatchEvent] = []
    var messages: [[WatchEvent]] = []
  }

  var random: Random
  /// The store after each applied index, as the first node to apply that index built it (the
  /// simulator checks that every node applies the same committed entries).
  var reference: [MVCCStore] = [MVCCStore()]
  /// The same changes with no compaction: the history the clients are checked against.
  var fullHistory = MVCCStore()
  var members: [NodeID: Member] = [:]
  var clients: [Client] = []
  var problems: [String] = []
  var counts = Counts()

  struct Counts: CustomStringConvertible {
    var events = 0
    var crashReconnects = 0
    var voluntaryReconnects = 0
    var compactionCancels = 0
    var slowCancels = 0
    var snapshotJumps = 0
    var replayedPieces = 0

    mutating func add(_ other: Counts) {
      events += other.events
      crashReconnects += other.crashReconnects
      voluntaryReconnects += other.voluntaryReconnects
      compactionCancels += other.compactionCancels
      slowCancels += other.slowCancels
      snapshotJumps += other.snapshotJumps
      replayedPieces += other.replayedPieces
    }

    var description: String {
      "\(events) events; reconnects after a crash \(crashReconnects), voluntary \(voluntaryReconnects); "
        + "cancels for compaction \(compactionCancels), too slow \(slowCancels); "
        + "snapshot installs under watchers \(snapshotJumps); replayed pieces \(replayedPieces)"
    }
  }
  /// A planted bug for `aGapIsCaught`: every 13th event a client receives is dropped.
  var plantDroppedEvent = false
  var received = 0
  let limits: WatchLimits

  init(seed: UInt64) {
    random = Random(seed: seed &* 0x9E37_79B9)
    var limits = WatchLimits()
    limits.maxPendingBytesPerWatcher = 3_000
    limits.catchUpEvents = 5
    limits.catchUpScannedChanges = 12
    self.limits = limits
  }

  // MARK: SimulationObserver

  func node(_ node: NodeID, applied entry: LogEntry) {
    guard var member = members[node] else {
      problems.append("\(node) applied \(entry.index) without a state machine")
      return
    }
    guard entry.index == member.applied + 1 else {
      problems.append("\(node) applied \(entry.index) after \(member.applied)")
      return
    }
    if entry.kind == .command { Self.apply(entry.data, to: &member.store, compacting: true) }
    member.applied = entry.index
    if reference.count == Int(entry.index) {
      reference.append(member.store)
      if entry.kind == .command { Self.apply(entry.data, to: &fullHistory, compacting: false) }
    } else if reference[Int(entry.index)].revision != member.store.revision {
      problems.append("\(node) is at revision \(member.store.revision) after \(entry.index), others were not")
    }
    members[node] = member
  }

  func node(_ node: NodeID, restoredAt index: UInt64) {
    guard Int(index) < reference.count else {
      problems.append("\(node) restored at \(index), which no node applied")
      return
    }
    let store = reference[Int(index)]
    if var member = members[node] {
      // A snapshot installed on a running member: its watchers stay, and the hub jumps.
      if member.hub.watcherCount > 0 { counts.snapshotJumps += 1 }
      member.store = store
      member.applied = index
      member.hub.publish(store)
      members[node] = member
    } else {
      members[node] = Member(store: store, applied: index, hub: WatchHub(store: store, limits: limits))
    }
  }

  func nodeCrashed(_ node: NodeID) {
    members[node] = nil
    for i in clients.indices where clients[i].node == node {
      counts.crashReconnects += 1
      clients[i].node = nil
      clients[i].watchID = nil
    }
  }

  func eventProcessed(at now: UInt64, upNodes: [NodeID]) {
    let up = upNodes.filter { members[$0] != nil }
    if clients.count < 6 && random.next(50) == 0, let node = pick(up) {
      var request = WatchRequest(range: Self.randomRange(&random))
      let revision = members[node]!.store.revision
      request.startRevision = [0, 1, revision / 2, revision + 3][random.next(4)]
      request.prevKV = random.next(2) == 0
      clients.append(Client(request: request))
      attach(clients.count - 1, to: node)
    }
    for i in clients.indices {
      if clients[i].node == nil, let node = pick(up) {
        attach(i, to: node)
      } else if random.next(400) == 0, let node = pick(up) {
        // The client drops its connection and resumes elsewhere.
        counts.voluntaryReconnects += 1
        if let old = clients[i].node, let id = clients[i].watchID { members[old]?.hub.cancel(id) }
        attach(i, to: node)
      } else if random.next(30) == 0, let node = clients[i].node, let id = clients[i].watchID {
        clients[i].writable.toggle()
        members[node]?.hub.setWritable(id, clients[i].writable)
      }
    }
    for node in up { pump(node) }
  }

  // MARK: Clients

  func pick(_ nodes: [NodeID]) -> NodeID? { nodes.isEmpty ? nil : nodes[random.next(nodes.count)] }

  func attach(_ i: Int, to node: NodeID) {
    var request = clients[i].request
    if clients[i].next > 0 { request.startRevision = clients[i].next }
    guard var member = members[node] else { return }
    do {
      clients[i].watchID = try member.hub.create(request)
      clients[i].node = node
      member.hub.setWritable(clients[i].watchID!, clients[i].writable)
      members[node] = member
    } catch {
      problems.append("watch refused: \(error)")
    }
  }

  /// Publishes the member's store to its hub and delivers what its watchers are owed.
  func pump(_ node: NodeID) {
    guard var member = members[node] else { return }
    member.hub.publish(member.store)
    member.hub.catchUp()
    let deliveries = member.hub.takeDeliveries()
    members[node] = member
    for (id, responses) in deliveries {
      guard let i = clients.firstIndex(where: { $0.node == node && $0.watchID == id }) else { continue }
      for response in responses { receive(response, by: i) }
    }
  }

  func receive(_ response: WatchResponse, by i: Int) {
    switch response.kind {
    case .created:
      if clients[i].next == 0 {
        let start = clients[i].request.startRevision
        clients[i].next = start > 0 ? start : response.revision + 1
        clients[i].expectedStart = clients[i].next
      }
    case .events:
      var events = response.events
      if plantDroppedEvent {
        events = events.filter { _ in
          received += 1
          return received % 13 != 0
        }
      }
      if let first = events.first, first.kv.modRevision < clients[i].next {
        problems.append(
          "client \(i) got revision \(first.kv.modRevision) again (expected from \(clients[i].next))")
      }
      clients[i].events += events
      clients[i].messages.append(events)
      clients[i].next = max(clients[i].next, response.revision + 1)
      counts.events += events.count
      if let node = clients[i].node, let member = members[node], response.revision < member.store.revision {
        counts.replayedPieces += 1
      }
    case .progress:
      clients[i].next = max(clients[i].next, response.revision + 1)
    case .canceled(_, let compactRevision, let resume):
      clients[i].watchID = nil
      clients[i].node = nil  // Reconnects on the next event.
      if compactRevision > 0 {
        counts.compactionCancels += 1
        clients[i].events.removeAll { $0.kv.modRevision <= compactRevision }
        clients[i].messages = []
        clients[i].next = compactRevision + 1
        clients[i].expectedStart = compactRevision + 1
      } else {
        counts.slowCancels += 1
        clients[i].next = resume
      }
    }
  }

  /// After the run: every client reads to the end on the most advanced member; then each stream
  /// is compared with the history.
  func finish() {
    // Ties go to the lowest node id: dictionary order differs between processes, and a seed must
    // replay exactly.
    guard
      let (node, member) = members.max(by: {
        ($0.value.applied, $1.key.rawValue) < ($1.value.applied, $0.key.rawValue)
      })
    else {
      problems.append("no member is up at the end")
      return
    }
    for i in clients.indices {
      if let old = clients[i].node, old != node, let id = clients[i].watchID { members[old]?.hub.cancel(id) }
      if clients[i].node != node {
        clients[i].writable = true
        attach(i, to: node)
      } else if let id = clients[i].watchID {
        clients[i].writable = true
        members[node]?.hub.setWritable(id, true)
      }
    }
    for _ in 0..<10_000 {
      pump(node)
      for i in clients.indices where clients[i].node == nil { attach(i, to: node) }
      // A synced watcher with nothing new says so only when asked.
      for client in clients where client.next <= member.store.revision {
        if let id = client.watchID { members[node]?.hub.requestProgress(id) }
      }
      if clients.allSatisfy({ $0.next > member.store.revision && $0.node != nil })
        && !(members[node]?.hub.hasCatchUpWork ?? false)
      {
        break
      }
    }
    for (i, client) in clients.enumerated() {
      guard client.next > member.store.revision else {
        problems.append("client \(i) ended at \(client.next), the member at \(member.store.revision)")
        continue
      }
      let request = client.request
      var expected =
        (try? fullHistory.events(in: request.range, from: client.expectedStart, prevKV: request.prevKV)) ?? []
      expected.removeAll { $0.kv.modRevision > member.store.revision }
      if client.events != expected {
        let got = client.events.map(\.kv.modRevision)
        let want = expected.map(\.kv.modRevision)
        problems.append(
          "client \(i) watching \(request.range) from \(client.expectedStart): got \(got.count) events "
            + "(\(got.prefix(12))...), expected \(want.count) (\(want.prefix(12))...)")
      }
      for message in client.messages where !message.isEmpty {
        for revision in Set([message.first!.kv.modRevision, message.last!.kv.modRevision]) {
          let all = expected.filter { $0.kv.modRevision == revision }
          if !all.allSatisfy({ message.contains($0) }) {
            problems.append("client \(i): revision \(revision) split across messages")
          }
        }
      }
    }
  }

  // MARK: The application's commands

  /// A command's bytes read as a store operation, the same on every node.
  static func apply(_ data: [UInt8], to store: inout MVCCStore, compacting: Bool) {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in data { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
    let key: [UInt8] = [UInt8(97 + hash % 3), UInt8(48 + (hash >> 8) % 4)]
    switch (hash >> 16) % 12 {
    case 0:
      _ = try? store.deleteRange(DeleteRangeRequest(range: KeyRange(key: key)))
    case 1:
      _ = try? store.deleteRange(DeleteRangeRequest(range: .prefix([key[0]])))
    case 2:
      let other: [UInt8] = [key[0], key[1] == 48 ? 49 : 48]
      _ = try? store.txn(
        TxnRequest(success: [
          .put(PutRequest(key: key, value: Array(data.prefix(8)))),
          .put(PutRequest(key: other, value: Array(data.suffix(4)))),
        ]))
    case 3:
      // A compaction takes no revision, so the uncompacted history keeps the same revisions.
      if compacting && store.revision - 6 > store.compactRevision { try? store.compact(store.revision - 6) }
    default:
      _ = try? store.put(PutRequest(key: key, value: Array(data.prefix(16))))
    }
  }

  static func randomRange(_ random: inout Random) -> KeyRange {
    switch random.next(3) {
    case 0: KeyRange(key: [UInt8(97 + random.next(3)), UInt8(48 + random.next(4))])
    case 1: .prefix([UInt8(97 + random.next(3))])
    default: .prefix([])
    }
  }
}
