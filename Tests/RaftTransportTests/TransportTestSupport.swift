import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Raft
import RaftStorage

@testable import RaftTransport

/// Records everything the transport reports.
final class RecordingDelegate: TransportDelegate, @unchecked Sendable {
  // Unchecked: all state is behind `lock`.
  let lock = NIOLock()
  private var _messages: [Message] = []
  private var _unreachable: [NodeID] = []
  private var _snapshotsSent: [(NodeID, Bool)] = []
  private var _snapshotsReceived: [(Message, [UInt8])] = []
  var refuseSnapshots = false

  var messages: [Message] { lock.withLock { _messages } }
  var unreachable: [NodeID] { lock.withLock { _unreachable } }
  var snapshotsSent: [(NodeID, Bool)] { lock.withLock { _snapshotsSent } }
  var snapshotsReceived: [(Message, [UInt8])] { lock.withLock { _snapshotsReceived } }

  func transportReceived(_ messages: [Message]) { lock.withLock { _messages.append(contentsOf: messages) } }
  func transportPeerUnreachable(_ peer: NodeID) { lock.withLock { _unreachable.append(peer) } }
  func transportSnapshotSent(to peer: NodeID, succeeded: Bool) {
    lock.withLock { _snapshotsSent.append((peer, succeeded)) }
  }
  func transportBeginReceivingSnapshot(from peer: NodeID, metadata: SnapshotMetadata) throws
    -> any SnapshotSink
  {
    if refuseSnapshots { throw WireError.malformed("refused by test") }
    return BufferSink()
  }
  func transportReceivedSnapshot(_ snapshot: ReceivedSnapshot) {
    let bytes = (snapshot.sink as! BufferSink).bytes
    lock.withLock { _snapshotsReceived.append((snapshot.message, bytes)) }
  }
  var freeBytes: UInt64 = .max
  private var _refusals: [TransportRefusal] = []
  var refusals: [TransportRefusal] { lock.withLock { _refusals } }
  func transportHasSpace(forSnapshotBytes bytes: UInt64) -> Bool { bytes <= freeBytes }
  func transportRefused(_ refusal: TransportRefusal) { lock.withLock { _refusals.append(refusal) } }
}

final class BufferSink: SnapshotSink {
  var bytes: [UInt8] = []
  var committed = false
  var aborted = false
  func write(_ chunk: [UInt8]) throws(StorageError) { bytes.append(contentsOf: chunk) }
  func commit() throws(StorageError) { committed = true }
  func abort() { aborted = true }
}

final class BufferSource: SnapshotSource {
  let metadata: SnapshotMetadata
  let data: [UInt8]
  var offset = 0
  var closed = false
  init(metadata: SnapshotMetadata, data: [UInt8]) {
    self.metadata = metadata
    self.data = data
  }
  var dataSize: Int64 { Int64(data.count) }
  func read(maxBytes: Int) throws(StorageError) -> [UInt8]? {
    guard offset < data.count else { return nil }
    let end = min(data.count, offset + maxBytes)
    defer { offset = end }
    return Array(data[offset..<end])
  }
  func close() { closed = true }
}

/// Polls until `condition` holds or the deadline passes (the network is asynchronous).
func eventually(
  timeout: Duration = .seconds(10), _ condition: () -> Bool
) async -> Bool {
  let deadline = ContinuousClock.now + timeout
  while ContinuousClock.now < deadline {
    if condition() { return true }
    try? await Task.sleep(for: .milliseconds(10))
  }
  return condition()
}

let testLogger: Logger = {
  var logger = Logger(label: "transport-test")
  logger.logLevel = .critical
  return logger
}()

/// One message of every kind, with edge values.
func sampleMessages(from: NodeID = NodeID(1), to: NodeID = NodeID(2), includeSnapshot: Bool = false)
  -> [Message]
{
  let configuration = Configuration(members: [
    Member(id: NodeID(1), isVoter: true, context: Array("node01|127.0.0.1:8089".utf8)),
    Member(id: NodeID(7), isVoter: false),
  ])
  let bodies: [Message.Body] =
    [
      .voteRequest(
        VoteRequest(isPreVote: true, lastLogIndex: 9, lastLogTerm: 3, isLeadershipTransfer: false)),
      .voteRequest(
        VoteRequest(isPreVote: false, lastLogIndex: .max, lastLogTerm: 0, isLeadershipTransfer: true)),
      .voteResponse(VoteResponse(isPreVote: true, granted: false)),
      .voteResponse(VoteResponse(isPreVote: false, granted: true)),
      .appendEntries(AppendEntries(prevLogIndex: 0, prevLogTerm: 0, entries: [], leaderCommit: 0)),
      .appendEntries(
        AppendEntries(
          prevLogIndex: 41, prevLogTerm: 5,
          entries: [
            LogEntry(index: 42, term: 5, kind: .command, data: Array(repeating: 0xEE, count: 300)),
            LogEntry(index: 43, term: 6, kind: .noop, data: []),
            LogEntry(index: 44, term: 6, kind: .configuration, data: configuration.encoded()),
          ], leaderCommit: 40)),
      .appendEntriesResponse(.accepted(matchIndex: 44)),
      .appendEntriesResponse(.rejected(rejectedIndex: 41, hintIndex: 30, hintTerm: 4)),
      .heartbeat(Heartbeat(commit: 12, readRound: 99)),
      .heartbeatResponse(HeartbeatResponse(readRound: 99)),
      .timeoutNow,
      .readIndexRequest(ReadIndexRequest(requestID: 5, mode: .lease)),
      .readIndexResponse(ReadIndexResponse(requestID: 5, result: .ready(index: 44))),
      .readIndexResponse(ReadIndexResponse(requestID: 6, result: .failed(.leadershipLost))),
      .transferCheck(TransferCheck(nonce: 77, candidate: NodeID(9), campaignTerm: 8)),
      .transferConfirm(nonce: 77),
      .leaderHint(leader: NodeID(4)),
      .leaderQuery,
      .memberQuery(candidate: NodeID(5)),
    ]
    + (includeSnapshot
      ? [.installSnapshot(SnapshotMetadata(index: 100, term: 7, configuration: configuration))] : [])
  return bodies.enumerated().map {
    Message(from: from, to: to, term: UInt64($0.offset + 1), body: $0.element)
  }
}

/// Messages carry entries whose data are arrays; compare through their descriptions plus payloads.
func sameMessage(_ a: Message, _ b: Message) -> Bool {
  guard a.from == b.from, a.to == b.to, a.term == b.term, "\(a.body)" == "\(b.body)" else { return false }
  switch (a.body, b.body) {
  case (.appendEntries(let x), .appendEntries(let y)): return x.entries == y.entries
  case (.installSnapshot(let x), .installSnapshot(let y)): return x == y
  default: return true
  }
}

/// A transport on a loopback port the kernel chose, with short reconnect delays; `admission`, if
/// given, is published before it listens. Returns it with its address.
func makeTransport(
  _ id: UInt64, group: any EventLoopGroup, delegate: RecordingDelegate, admission: PeerAdmission? = nil
) async throws -> (PeerTransport, String) {
  var options = TransportOptions()
  options.reconnectDelayMin = .milliseconds(20)
  options.reconnectDelayMax = .milliseconds(200)
  options.snapshotChunkBytes = 1000
  let transport = PeerTransport(
    localID: NodeID(id), group: group, options: options, logger: testLogger, delegate: delegate)
  if let admission { transport.updateAdmission(admission) }
  let address = try await transport.listen(host: "127.0.0.1", port: 0)
  return (transport, "127.0.0.1:\(address.port!)")
}

/// Admission of exactly `members`, in cluster `cluster`.
func admission(members: [UInt64], cluster: UInt64) -> PeerAdmission {
  var admission = PeerAdmission()
  admission.members = Set(members.map(NodeID.init))
  admission.admitsStrangers = false
  admission.clusterID = cluster
  return admission
}

/// Nodes 1 and 2 on loopback (with `admissions`, if given), node 1 told where node 2 listens; both
/// shut down after `body`, which gets the transports and their delegates.
func withTwoTransports(
  admissions: (PeerAdmission, PeerAdmission)? = nil,
  _ body: (PeerTransport, PeerTransport, RecordingDelegate, RecordingDelegate) async throws -> Void
) async throws {
  let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
  let (d1, d2) = (RecordingDelegate(), RecordingDelegate())
  let (t1, _) = try await makeTransport(1, group: group, delegate: d1, admission: admissions?.0)
  let (t2, a2) = try await makeTransport(2, group: group, delegate: d2, admission: admissions?.1)
  t1.setPeers([NodeID(2): a2])
  do {
    try await body(t1, t2, d1, d2)
  } catch {
    await t1.shutdown()
    await t2.shutdown()
    try await group.shutdownGracefully()
    throw error
  }
  await t1.shutdown()
  await t2.shutdown()
  try await group.shutdownGracefully()
}
