@_spi(Testing) @testable import Raft

/// A hand-driven cluster for scenario tests: nothing moves unless the test says so. Messages wait in
/// a mailbox until delivered; persistence is immediate and exact, so a test can crash a node and
/// restart it from precisely what it had made durable.
final class TestCluster {
  private(set) var nodes: [NodeID: RaftNode] = [:]
  private(set) var durable: [NodeID: StoredState] = [:]
  private(set) var options: [NodeID: RaftOptions] = [:]
  /// Sent but not yet delivered, in send order.
  var mailbox: [Message] = []
  private(set) var applied: [NodeID: [LogEntry]] = [:]
  private(set) var readStates: [NodeID: [ReadState]] = [:]
  /// Messages to or from these nodes are dropped when delivered.
  var isolated: Set<NodeID> = []
  /// Extra rule for dropping messages at delivery.
  var dropRule: ((Message) -> Bool)?
  /// Sees every `Ready` that `drain` handles, before it is handled (for tests that inspect them).
  var readyObserver: ((NodeID, Ready) -> Void)?

  /// A cluster of `voters` (and `learners`), all bootstrapped with the same configuration.
  init(
    voters: [UInt64], learners: [UInt64] = [], configure: (inout RaftOptions) -> Void = { _ in }
  ) {
    let configuration = Configuration(voters: voters.map(NodeID.init), learners: learners.map(NodeID.init))
    for raw in voters + learners {
      let id = NodeID(raw)
      var nodeOptions = RaftOptions(id: id, randomSeed: raw)
      configure(&nodeOptions)
      options[id] = nodeOptions
      durable[id] = RaftNode.bootstrap(configuration)
      nodes[id] = RaftNode(options: nodeOptions, stored: durable[id]!)
    }
  }

  subscript(_ raw: UInt64) -> RaftNode { nodes[NodeID(raw)]! }

  /// Adds a node that has never been part of the cluster (it joins through a membership change).
  func addBlankNode(_ raw: UInt64, configure: (inout RaftOptions) -> Void = { _ in }) {
    let id = NodeID(raw)
    var nodeOptions = RaftOptions(id: id, randomSeed: raw)
    configure(&nodeOptions)
    options[id] = nodeOptions
    durable[id] = .empty
    let node = RaftNode(options: nodeOptions, stored: .empty)
    // As a joining server does: it hears from the members its seed named, and no one else.
    node.trustWhileJoining(nodes.keys)
    nodes[id] = node
  }

  /// Replaces a node's durable state before anything happened (to set up a paper figure's logs).
  func install(_ raw: UInt64, term: UInt64, vote: UInt64? = nil, logTerms: [UInt64], commit: UInt64 = 0) {
    let id = NodeID(raw)
    var entries = durable[id]!.entries.filter { $0.index == 1 }
    for (offset, term) in logTerms.enumerated() {
      entries.append(LogEntry(index: UInt64(offset + 2), term: term, data: [UInt8(offset)]))
    }
    durable[id] = StoredState(
      hardState: HardState(term: term, vote: vote.map(NodeID.init), commit: commit), entries: entries)
    nodes[id] = RaftNode(options: options[id]!, stored: durable[id]!)
  }

  // MARK: Driving

  /// Handles every pending `Ready` of a node the way the contract says.
  func drain(_ raw: UInt64) { drain(NodeID(raw)) }

  func drain(_ id: NodeID) {
    guard let node = nodes[id] else { return }
    while node.hasReady {
      let ready = node.takeReady()
      readyObserver?(id, ready)
      mailbox.append(contentsOf: ready.messages)
      persist(ready, for: id)
      mailbox.append(contentsOf: ready.messagesAfterPersist)
      if let position = ready.persistedThrough { node.persisted(through: position) }
      applied[id, default: []].append(contentsOf: ready.committedEntries)
      readStates[id, default: []].append(contentsOf: ready.readStates)
    }
  }

  private func persist(_ ready: Ready, for id: NodeID) {
    var state = durable[id]!
    if let snapshot = ready.snapshot {
      state.snapshot = snapshot
      state.entries = []
      applied[id] = []
    }
    if let first = ready.entries.first {
      state.entries.removeAll { $0.index >= first.index }
      state.entries.append(contentsOf: ready.entries)
    }
    if let hardState = ready.hardState { state.hardState = hardState }
    durable[id] = state
  }

  func drainAll() {
    for id in nodes.keys.sorted() { drain(id) }
  }

  func tick(_ raw: UInt64, times: Int = 1) {
    for _ in 0..<times {
      self[raw].tick()
      drain(raw)
    }
  }

  func tickAll(times: Int = 1) {
    for _ in 0..<times {
      for id in nodes.keys.sorted() {
        nodes[id]!.tick()
        drain(id)
      }
    }
  }

  /// Delivers mailbox messages matching `filter`, in order, including those their delivery causes,
  /// until none match. Returns how many were delivered.
  @discardableResult
  func deliver(where filter: (Message) -> Bool = { _ in true }, limit: Int = 100_000) -> Int {
    var delivered = 0
    while delivered < limit, let k = mailbox.firstIndex(where: filter) {
      let message = mailbox.remove(at: k)
      guard let target = nodes[message.to] else { continue }
      if isolated.contains(message.from) || isolated.contains(message.to) || dropRule?(message) == true {
        continue
      }
      target.step(message)
      drain(message.to)
      delivered += 1
    }
    return delivered
  }

  /// Delivers everything until the mailbox is empty.
  @discardableResult
  func stabilize() -> Int {
    drainAll()
    return deliver()
  }

  /// Drops every message in the mailbox (matching `filter`).
  func discard(where filter: (Message) -> Bool = { _ in true }) {
    mailbox.removeAll(where: filter)
  }

  /// Ticks only `raw`, delivering everything after each tick, until it leads (other nodes never
  /// time out, so it is the only candidate). Fails the precondition if it cannot win.
  func elect(_ raw: UInt64) {
    let node = self[raw]
    for _ in 0..<1000 where !node.isLeader {
      node.tick()
      drain(NodeID(raw))
      deliver()
    }
    precondition(node.isLeader, "\(raw) could not win an election")
    stabilize()
  }

  /// Loses all volatile state; the node comes back from exactly what it had made durable.
  func restart(_ raw: UInt64) {
    let id = NodeID(raw)
    mailbox.removeAll { $0.from == id || $0.to == id }
    nodes[id] = RaftNode(options: options[id]!, stored: durable[id]!)
    applied[id] = []
    readStates[id] = []
  }

  @discardableResult
  func propose(_ raw: UInt64, _ text: String) throws(ProposalError) -> LogPosition {
    let position = try self[raw].propose(Array(text.utf8))
    drain(raw)
    return position
  }

  // MARK: Inspecting

  func logTerms(_ raw: UInt64) -> [UInt64] {
    self[raw].entries(from: 1).map(\.term)
  }

  func appliedCommands(_ raw: UInt64) -> [String] {
    (applied[NodeID(raw)] ?? []).filter { $0.kind == .command }.map {
      String(decoding: $0.data, as: UTF8.self)
    }
  }

  var leaders: [NodeID] { nodes.values.filter(\.isLeader).map(\.id).sorted() }
}
