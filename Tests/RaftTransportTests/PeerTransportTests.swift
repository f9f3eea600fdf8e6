import NIOCore
import NIOPosix
import Raft
import Testing

@testable import RaftTransport

/// Real TCP on loopback (ports chosen by the kernel below 32768 are not guaranteed, so we bind port 0
/// only on 127.0.0.1 and tell peers the resulting address).
enum PortProbe {
  /// A loopback port that is free now (bound to 0, then released).
  static func free() -> Int {
    let channel = try! ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(
      host: "127.0.0.1", port: 0
    ).wait()
    let port = channel.localAddress!.port!
    try! channel.close().wait()
    return port
  }
}

@Suite(.serialized) struct PeerTransportTests {
  @Test func messagesFlowBothWays() async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    let (d1, d2) = (RecordingDelegate(), RecordingDelegate())
    let (t1, a1) = try await makeTransport(1, group: group, delegate: d1)
    let (t2, a2) = try await makeTransport(2, group: group, delegate: d2)
    t1.setPeers([NodeID(2): a2])
    t2.setPeers([NodeID(1): a1])
    let toTwo = sampleMessages(from: NodeID(1), to: NodeID(2))
    t1.send(toTwo)
    t2.send(sampleMessages(from: NodeID(2), to: NodeID(1)))
    #expect(await eventually { d2.messages.count == toTwo.count && d1.messages.count == toTwo.count })
    #expect(zip(d2.messages, toTwo).allSatisfy(sameMessage))
    await t1.shutdown()
    await t2.shutdown()
    try await group.shutdownGracefully()
  }

  /// A node whose configuration does not list a peer yet (it is joining) can still answer it, at the
  /// address the peer advertised when it connected.
  @Test func aJoiningNodeAnswersAtTheAdvertisedAddress() async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    let (d1, d2) = (RecordingDelegate(), RecordingDelegate())
    let leader = PeerTransport(
      localID: NodeID(1), advertisedAddress: "127.0.0.1:\(PortProbe.free())", group: group,
      logger: testLogger,
      delegate: d1)
    let (_, leaderPort) = parseHostPort(leader.advertisedAddress)!
    try await leader.listen(host: "127.0.0.1", port: leaderPort)
    let (joiner, joinerAddress) = try await makeTransport(2, group: group, delegate: d2)
    leader.setPeers([NodeID(2): joinerAddress])
    leader.send([
      Message(from: NodeID(1), to: NodeID(2), term: 2, body: .heartbeat(Heartbeat(commit: 0, readRound: 1)))
    ])
    #expect(await eventually { d2.messages.count == 1 })
    joiner.send([
      Message(
        from: NodeID(2), to: NodeID(1), term: 2, body: .heartbeatResponse(HeartbeatResponse(readRound: 1)))
    ])
    #expect(await eventually { d1.messages.count == 1 })
    await leader.shutdown()
    await joiner.shutdown()
    try await group.shutdownGracefully()
  }

  /// A peer that is down is reported unreachable; once it listens, messages get through.
  @Test func reconnectsWhenThePeerComesBack() async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    let (d1, d2) = (RecordingDelegate(), RecordingDelegate())
    let (t1, _) = try await makeTransport(1, group: group, delegate: d1)
    // Reserve a port for node 2, then close it so connections are refused.
    let (probe, a2) = try await makeTransport(2, group: group, delegate: RecordingDelegate())
    await probe.shutdown()
    t1.setPeers([NodeID(2): a2])
    t1.send([sampleMessages()[0]])
    #expect(await eventually { d1.unreachable.contains(NodeID(2)) })

    let t2 = PeerTransport(localID: NodeID(2), group: group, logger: testLogger, delegate: d2)
    let (_, port) = parseHostPort(a2)!
    try await t2.listen(host: "127.0.0.1", port: port)
    let delivered = await eventually {
      t1.send([Message(from: NodeID(1), to: NodeID(2), term: 1, body: .timeoutNow)])
      return !d2.messages.isEmpty
    }
    #expect(delivered)
    await t1.shutdown()
    await t2.shutdown()
    try await group.shutdownGracefully()
  }

  /// While a peer is unreachable its queue stays bounded: excess messages are dropped, not buffered.
  @Test func sendQueueIsBounded() async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    var options = TransportOptions()
    options.maxQueuedMessagesPerPeer = 10
    options.reconnectDelayMin = .seconds(5)
    let transport = PeerTransport(
      localID: NodeID(1), group: group, options: options, logger: testLogger, delegate: RecordingDelegate())
    // 192.0.2.1 (TEST-NET-1) never answers, so the connection stays pending.
    transport.setPeers([NodeID(2): "192.0.2.1:9"])
    transport.send(
      (0..<100).map { Message(from: NodeID(1), to: NodeID(2), term: UInt64($0), body: .timeoutNow) })
    #expect(await eventually { transport.droppedMessages == 90 })
    await transport.shutdown()
    try await group.shutdownGracefully()
  }

  /// A snapshot streams in many chunks on its own connection and is acknowledged.
  @Test func snapshotStreamsAndIsAcknowledged() async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    let (d1, d2) = (RecordingDelegate(), RecordingDelegate())
    let (t1, _) = try await makeTransport(1, group: group, delegate: d1)
    let (t2, a2) = try await makeTransport(2, group: group, delegate: d2)
    t1.setPeers([NodeID(2): a2])
    let metadata = SnapshotMetadata(
      index: 50, term: 3, configuration: Configuration(voters: [NodeID(1), NodeID(2)]))
    let data = (0..<25_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
    let message = Message(from: NodeID(1), to: NodeID(2), term: 3, body: .installSnapshot(metadata))
    t1.sendSnapshot(message, source: BufferSource(metadata: metadata, data: data))
    #expect(await eventually { d1.snapshotsSent.count == 1 })
    #expect(d1.snapshotsSent.first?.1 == true)
    #expect(d2.snapshotsReceived.count == 1)
    #expect(d2.snapshotsReceived.first?.1 == data)
    await t1.shutdown()
    await t2.shutdown()
    try await group.shutdownGracefully()
  }

  /// A receiver that refuses the snapshot (its disk said no, or it belongs to another cluster)
  /// makes the sender report failure, and keeps nothing of it.
  @Test(arguments: [false, true]) func refusedSnapshotIsReportedAsFailed(byAnotherCluster: Bool) async throws
  {
    let admissions = (admission(members: [1, 2], cluster: 0xA), admission(members: [1, 2], cluster: 0xB))
    try await withTwoTransports(admissions: byAnotherCluster ? admissions : nil) { t1, _, d1, d2 in
      d2.refuseSnapshots = !byAnotherCluster
      let metadata = SnapshotMetadata(index: 5, term: 1, configuration: Configuration(voters: [NodeID(1)]))
      t1.sendSnapshot(
        Message(from: NodeID(1), to: NodeID(2), term: 1, body: .installSnapshot(metadata)),
        source: BufferSource(metadata: metadata, data: Array(repeating: 1, count: 5000)))
      #expect(await eventually { d1.snapshotsSent.count == 1 })
      #expect(d1.snapshotsSent.first?.1 == false)
      #expect(d2.snapshotsReceived.isEmpty)
      #expect(d2.refusals.map(\.reason) == (byAnotherCluster ? [.wrongCluster] : [.malformed]))
    }
  }

}
