import NIOCore
import NIOEmbedded
import NIOPosix
import Raft
import Testing

@testable import RaftTransport

/// The hello's identity checks: a peer of another cluster or group is refused, counted, told why,
/// and then sent nothing until it accepts a hello; a cluster id of 0 (unknown) is not checked.
@Suite struct ClusterIdentityTests {
  /// An inbound pipeline for node 2, as the transport builds it.
  func inbound(_ delegate: RecordingDelegate, admission: PeerAdmission) throws -> EmbeddedChannel {
    let channel = EmbeddedChannel()
    let sync = channel.pipeline.syncOperations
    try sync.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: 1 << 20)))
    try sync.addHandler(
      InboundConnectionHandler(
        localID: NodeID(2), delegate: delegate, logger: testLogger, admission: { admission },
        describe: { $0 == NodeID(1) ? "node01" : "member \($0.hex)" }))
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    return channel
  }

  func hello(
    from: UInt64 = 1, to: UInt64 = 2, cluster: UInt64, kind: WireFormat.StreamKind = .messages,
    group: UInt32 = WireFormat.singleGroupID
  ) -> ByteBuffer {
    var buffer = ByteBufferAllocator().buffer(capacity: 64)
    buffer.writeHello(
      WireFormat.Hello(
        version: WireFormat.protocolVersion, kind: kind, from: NodeID(from), to: NodeID(to),
        advertisedAddress: "127.0.0.1:7001", clusterID: cluster, groupID: group))
    return buffer
  }

  /// The frames node 2 wrote back.
  func answers(_ channel: EmbeddedChannel) throws -> [Frame] {
    var decoder = FrameDecoder(maxFrameBytes: 64, helloDecoded: true)
    var frames: [Frame] = []
    while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
      while let frame = try decoder.decodeFrame(from: &buffer) { frames.append(frame) }
    }
    return frames
  }

  func verdicts(_ frames: [Frame]) -> [String] {
    frames.map { frame in
      guard case .helloAnswer(let verdict, let cluster) = frame else { return "other" }
      return "\(verdict) \(HexID.format(cluster))"
    }
  }

  @Test func aHelloOfAnotherClusterIsRefusedAndToldSo() throws {
    let delegate = RecordingDelegate()
    let channel = try inbound(delegate, admission: admission(members: [1, 2, 3], cluster: 0xB))
    var stream = hello(cluster: 0xA)
    stream.writeMessageFrame(Message(from: NodeID(1), to: NodeID(2), term: 9, body: .timeoutNow))
    _ = try? channel.writeInbound(stream)
    channel.pipeline.fireChannelReadComplete()
    #expect(!channel.isActive)
    #expect(delegate.messages.isEmpty, "a message after a refused hello reached the node")
    #expect(delegate.refusals.map(\.reason) == [.wrongCluster])
    let detail = delegate.refusals.first?.detail ?? ""
    #expect(detail.contains("node01"), "the refusal names the peer: \(detail)")
    #expect(detail.contains("cluster 000000000000000a"), "and the clusters: \(detail)")
    #expect(verdicts(try answers(channel)) == ["wrongCluster 000000000000000b"])
  }

  /// In another cluster the ids name other members, or nobody: the cluster is checked first, so a
  /// stale address that leads into another cluster is reported as that, not as a misaddressed hello.
  @Test func theClusterIsCheckedBeforeTheIds() throws {
    let delegate = RecordingDelegate()
    let channel = try inbound(delegate, admission: admission(members: [2, 3], cluster: 0xB))
    _ = try? channel.writeInbound(hello(from: 77, to: 88, cluster: 0xA))
    #expect(delegate.refusals.map(\.reason) == [.wrongCluster])
  }

  /// 0 means "unknown" (a data directory from before cluster ids): neither side checks it.
  @Test(arguments: [(UInt64(0xB), UInt64(0)), (0, 0xA), (0, 0), (0xB, 0xB)])
  func anUnknownClusterIsNotChecked(ours: UInt64, theirs: UInt64) throws {
    let delegate = RecordingDelegate()
    let channel = try inbound(delegate, admission: admission(members: [1, 2, 3], cluster: ours))
    try channel.writeInbound(hello(cluster: theirs))
    #expect(channel.isActive)
    #expect(delegate.refusals.isEmpty)
    #expect(verdicts(try answers(channel)) == ["accepted \(HexID.format(ours))"])
  }

  /// A hello for a group the node does not run is refused and told so. A message for one, on a
  /// stream whose hello was accepted, breaks the stream (the sender heard only the acceptance).
  @Test(arguments: [true, false]) func anotherGroupIsRefusedAsWrongGroup(inTheHello: Bool) throws {
    let delegate = RecordingDelegate()
    let channel = try inbound(delegate, admission: admission(members: [1, 2, 3], cluster: 0xB))
    var stream = hello(cluster: 0xB, group: inTheHello ? 5 : WireFormat.singleGroupID)
    stream.writeMessageFrame(Message(from: NodeID(1), to: NodeID(2), term: 9, body: .timeoutNow), group: 0)
    _ = try? channel.writeInbound(stream)
    #expect(!channel.isActive)
    #expect(delegate.refusals.map(\.reason) == [.wrongGroup])
    #expect(verdicts(try answers(channel)) == ["\(inTheHello ? "wrongGroup" : "accepted") 000000000000000b"])
  }

  /// A sender of a build before hello answers reads frames on a snapshot stream, and would take an
  /// acceptance for a protocol error.
  @Test func aSnapshotStreamHearsNoAcceptance() throws {
    let delegate = RecordingDelegate()
    let channel = try inbound(delegate, admission: admission(members: [1, 2, 3], cluster: 0xB))
    try channel.writeInbound(hello(cluster: 0xB, kind: .snapshot))
    #expect(channel.isActive)
    #expect(try answers(channel).isEmpty)
  }

  /// Why ids alone were not enough: two clusters that use the same names had the same name-hash
  /// ids, so a hello from one cluster's node01 to the other's node02 named a member on both sides
  /// and was admitted. A cluster id, or random member ids, each refuse it.
  @Test func theSameNamesInTwoClustersNoLongerMeanTheSameMembers() throws {
    let node01 = UInt64(0x1111)  // Stand-ins for the hashes of "node01", "node02" and "node03".
    let sameIDs = admission(members: [node01, 2, 0x3333], cluster: 0)
    let before = RecordingDelegate()
    let legacy = try inbound(before, admission: sameIDs)
    try legacy.writeInbound(hello(from: node01, cluster: 0))
    #expect(legacy.isActive, "with name-hash ids and no cluster ids the other cluster was admitted")

    let now = RecordingDelegate()
    let identified = try inbound(now, admission: admission(members: [0x51, 2, 0x53], cluster: 0xB))
    _ = try? identified.writeInbound(hello(from: node01, cluster: 0xA))
    #expect(!identified.isActive)
    #expect(now.refusals.map(\.reason) == [.wrongCluster])
  }

}

/// The same over loopback, with both transports real.
@Suite(.serialized) struct ClusterIdentityTransportTests {
  /// Node 1 of cluster A is told that node 2 is at an address where node 2 of cluster B listens.
  /// B refuses the hello and says why; A then sends nothing there (its messages are dropped, and
  /// it only probes with hellos) until the listener accepts it, and then delivers again.
  @Test func aPeerOfAnotherClusterGetsNothingUntilItAccepts() async throws {
    let admissions = (admission(members: [1, 2], cluster: 0xA), admission(members: [1, 2], cluster: 0xB))
    try await withTwoTransports(admissions: admissions) { a, b, _, d2 in
      let heartbeat = Message(
        from: NodeID(1), to: NodeID(2), term: 3, body: .heartbeat(Heartbeat(commit: 0, readRound: 1)))
      a.send([heartbeat])
      #expect(await eventually { d2.refusals.contains { $0.reason == .wrongCluster } })
      // Once refused, messages to that peer are dropped at the sender. (A generous timeout: under
      // a loaded CI machine a probe that hears no refusal in time counts as accepted for a while.)
      #expect(
        await eventually(timeout: .seconds(60)) {
          a.send([heartbeat])
          return a.droppedMessages >= 20
        })
      #expect(d2.messages.isEmpty, "a message reached a node of another cluster")
      #expect(d2.refusals.allSatisfy { $0.reason == .wrongCluster })

      // The listener now belongs to cluster A (as when the right node is back at its address).
      b.updateAdmission(admission(members: [1, 2], cluster: 0xA))
      #expect(
        await eventually {
          a.send([heartbeat])
          return !d2.messages.isEmpty
        })
    }
  }
}
