@_spi(Testing) @testable import Raft

// Shared vocabulary for the scenario tests: message classification, elections that work with
// check-quorum on, and lone nodes built straight from stored state for single-rule tests.

extension Message {
  var voteRequest: VoteRequest? {
    if case .voteRequest(let request) = body { return request }
    return nil
  }

  var voteResponse: VoteResponse? {
    if case .voteResponse(let response) = body { return response }
    return nil
  }

  var appendEntries: AppendEntries? {
    if case .appendEntries(let append) = body { return append }
    return nil
  }

  var appendResponse: AppendEntriesResponse? {
    if case .appendEntriesResponse(let response) = body { return response }
    return nil
  }

  var installedSnapshot: SnapshotMetadata? {
    if case .installSnapshot(let snapshot) = body { return snapshot }
    return nil
  }

  var isVoteTraffic: Bool { voteRequest != nil || voteResponse != nil }

  var isPreVoteRequest: Bool { voteRequest?.isPreVote == true }

  var isRealVoteRequest: Bool { voteRequest.map { !$0.isPreVote } ?? false }

  var isHeartbeat: Bool {
    if case .heartbeat = body { return true }
    return false
  }

  var isHeartbeatResponse: Bool {
    if case .heartbeatResponse = body { return true }
    return false
  }

  var isTimeoutNow: Bool {
    if case .timeoutNow = body { return true }
    return false
  }

  var isReadIndexRequest: Bool {
    if case .readIndexRequest = body { return true }
    return false
  }

  var isAcceptedAppend: Bool {
    if case .accepted = appendResponse { return true }
    return false
  }

  var isRejectedAppend: Bool {
    if case .rejected = appendResponse { return true }
    return false
  }

  var isGrantedRealVote: Bool { voteResponse.map { $0.granted && !$0.isPreVote } ?? false }

  func isBetween(_ a: UInt64, _ b: UInt64) -> Bool {
    (from.rawValue == a && to.rawValue == b) || (from.rawValue == b && to.rawValue == a)
  }
}

extension TestCluster {
  /// Ticks each of `raws` through a whole election timeout, dropping what they send, so that none
  /// of them still honours a leader lease (thesis §4.2.3) when a candidate asks for its vote.
  func expireLeases(of raws: [UInt64]) {
    let before = mailbox.count
    for raw in raws {
      tick(raw, times: options[NodeID(raw)]!.electionTimeoutTicks)
    }
    mailbox.removeSubrange(before...)
  }

  /// Lets the other nodes (or `expiring`) run out their leases, then ticks only `raw`, delivering
  /// the messages that `filter` lets through, until it leads. Returns whether it won.
  @discardableResult
  func campaign(
    _ raw: UInt64, expiring: [UInt64]? = nil, deliver filter: (Message) -> Bool = { _ in true }
  ) -> Bool {
    expireLeases(of: expiring ?? nodes.keys.map(\.rawValue).filter { $0 != raw }.sorted())
    let node = self[raw]
    for _ in 0..<1000 where !node.isLeader {
      tick(raw)
      deliver(where: filter)
    }
    return node.isLeader
  }

  /// Elects `raw` with check-quorum on and lets the cluster settle (its no-op committed everywhere
  /// reachable).
  @discardableResult
  func electLeader(_ raw: UInt64, expiring: [UInt64]? = nil) -> Bool {
    guard campaign(raw, expiring: expiring) else { return false }
    stabilize()
    return true
  }

  func mailboxCount(where predicate: (Message) -> Bool) -> Int {
    mailbox.reduce(0) { $0 + (predicate($1) ? 1 : 0) }
  }

  func reads(_ raw: UInt64) -> [ReadState] { readStates[NodeID(raw)] ?? [] }

  func durableState(_ raw: UInt64) -> StoredState { durable[NodeID(raw)]! }
}

func ids(_ raws: [UInt64]) -> [NodeID] { raws.map(NodeID.init) }

/// Stored state of a bootstrapped member of `voters` whose log continues with one entry per term in
/// `logTerms` (from index 2).
func storedState(voters: [UInt64], term: UInt64, vote: UInt64? = nil, logTerms: [UInt64] = []) -> StoredState
{
  var state = RaftNode.bootstrap(Configuration(voters: ids(voters)))
  for (offset, entryTerm) in logTerms.enumerated() {
    state.entries.append(LogEntry(index: UInt64(offset + 2), term: entryTerm, data: [UInt8(offset)]))
  }
  state.hardState = HardState(term: term, vote: vote.map(NodeID.init))
  return state
}

func makeNode(
  _ raw: UInt64, stored: StoredState, configure: (inout RaftOptions) -> Void = { _ in }
) -> RaftNode {
  var options = RaftOptions(id: NodeID(raw), randomSeed: raw)
  configure(&options)
  return RaftNode(options: options, stored: stored)
}

func entries(from first: UInt64, terms: [UInt64]) -> [LogEntry] {
  terms.enumerated().map {
    LogEntry(index: first + UInt64($0.offset), term: $0.element, data: [UInt8($0.offset)])
  }
}
