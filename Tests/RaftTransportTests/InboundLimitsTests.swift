import NIOCore
import NIOEmbedded
import NIOPosix
import Raft
import Testing

@testable import RaftTransport

/// The inbound side's bounds: what a stranger on the peer network can make a node hold, for how
/// long, and from whom it takes connections and snapshots.
@Suite struct InboundLimitsTests {
  func connect(_ channel: EmbeddedChannel) throws {
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
  }

  /// An inbound pipeline as the transport builds it, on an embedded loop whose clock the test moves.
  func inboundChannel(
    delegate: RecordingDelegate, admission: PeerAdmission = PeerAdmission(),
    options: TransportOptions = .init(),
    budget: PeerBufferBudget = PeerBufferBudget(limitBytes: 256 << 20)
  ) throws -> EmbeddedChannel {
    let channel = EmbeddedChannel()
    let progress = InboundConnectionProgress()
    let sync = channel.pipeline.syncOperations
    try sync.addHandler(
      PeerConnectionGuard(progress: progress, options: options, budget: budget) { reason, detail in
        delegate.transportRefused(TransportRefusal(reason: reason, remote: "test", detail: detail))
      })
    try sync.addHandler(
      ByteToMessageHandler(
        FrameDecoder(maxFrameBytes: options.maxFrameBytes, progress: progress, budget: budget)))
    try sync.addHandler(
      InboundConnectionHandler(
        localID: NodeID(2), delegate: delegate, logger: testLogger, options: options, progress: progress,
        admission: { admission }))
    try connect(channel)
    return channel
  }

  func hello(from: UInt64, kind: WireFormat.StreamKind = .messages, cluster: UInt64 = 0) -> ByteBuffer {
    var buffer = ByteBufferAllocator().buffer(capacity: 64)
    buffer.writeHello(
      WireFormat.Hello(
        version: WireFormat.protocolVersion, kind: kind, from: NodeID(from), to: NodeID(2), clusterID: cluster
      ))
    return buffer
  }

  func members(_ ids: UInt64...) -> PeerAdmission { Self.members(ids) }

  static func members(_ ids: [UInt64]) -> PeerAdmission {
    var admission = PeerAdmission()
    admission.members = Set(ids.map(NodeID.init))
    admission.admitsStrangers = false
    admission.term = 5
    admission.leader = NodeID(1)
    return admission
  }

  /// Before a hello, a frame may be no larger than the largest hello: a stranger announcing a 64 MiB
  /// frame is refused from its length alone.
  @Test func framesBeforeTheHelloAreSmall() {
    var decoder = FrameDecoder(maxFrameBytes: 64 << 20)
    var buffer = ByteBufferAllocator().buffer(bytes: [0x03, 0xFF, 0xFF, 0xFF, 1])
    #expect(throws: WireError.frameTooLarge(0x03FF_FFFF, limit: WireFormat.maxHelloFrameBytes)) {
      _ = try decoder.decodeFrame(from: &buffer)
    }
    // The largest hello a sender can write fits.
    var hello = ByteBufferAllocator().buffer(capacity: 512)
    hello.writeHello(
      WireFormat.Hello(
        version: WireFormat.protocolVersion, kind: .messages, from: NodeID(1), to: NodeID(2),
        advertisedAddress: String(repeating: "a", count: WireFormat.maxAdvertisedAddressBytes),
        clusterID: .max))
    #expect((try? decoder.decodeFrame(from: &hello)) != nil)
  }

  @Test func helloFromAStrangerIsRefusedOnceTheNodeHasAConfiguration() throws {
    let delegate = RecordingDelegate()
    let channel = try inboundChannel(delegate: delegate, admission: members(1, 2, 3))
    _ = try? channel.writeInbound(hello(from: 99))
    #expect(!channel.isActive)
    #expect(delegate.refusals.map(\.reason) == [.unknownPeer])

    let member = try inboundChannel(delegate: delegate, admission: members(1, 2, 3))
    try member.writeInbound(hello(from: 3))
    #expect(member.isActive)
  }

  @Test func aJoiningNodeTakesHellosFromAnyone() throws {
    let delegate = RecordingDelegate()
    let channel = try inboundChannel(delegate: delegate)  // Admits strangers by default.
    try channel.writeInbound(hello(from: 99))
    #expect(channel.isActive)
  }

  @Test func helloFromAnotherClusterIsRefused() throws {
    let delegate = RecordingDelegate()
    var admission = members(1, 2, 3)
    admission.clusterID = 7
    let channel = try inboundChannel(delegate: delegate, admission: admission)
    _ = try? channel.writeInbound(hello(from: 1, cluster: 8))
    #expect(!channel.isActive)
    #expect(delegate.refusals.map(\.reason) == [.wrongCluster])
  }

  /// A snapshot's message on a message stream would make the core accept data it never received.
  @Test func installSnapshotOnAMessageStreamIsRefused() throws {
    let delegate = RecordingDelegate()
    let channel = try inboundChannel(delegate: delegate, admission: members(1, 2, 3))
    var buffer = hello(from: 1)
    let snapshot = SnapshotMetadata(index: 10, term: 5, configuration: Configuration(voters: [NodeID(1)]))
    buffer.writeMessageFrame(
      Message(from: NodeID(1), to: NodeID(2), term: 5, body: .installSnapshot(snapshot)))
    _ = try? channel.writeInbound(buffer)
    channel.pipeline.fireChannelReadComplete()
    #expect(!channel.isActive)
    #expect(delegate.messages.isEmpty)
  }

  func snapshotStream(from: UInt64, term: UInt64, announcing size: UInt64) -> ByteBuffer {
    var buffer = hello(from: from, kind: .snapshot)
    let metadata = SnapshotMetadata(index: 10, term: term, configuration: Configuration(voters: [NodeID(1)]))
    buffer.writeMessageFrame(
      Message(from: NodeID(from), to: NodeID(2), term: term, body: .installSnapshot(metadata)))
    buffer.writeFrame(.snapshotBegin) { body in
      body.writeSnapshotMetadata(metadata)
      body.writeInteger(size)
    }
    return buffer
  }

  /// Only the leader (or a member in a newer term) may stream a snapshot, only as large as the
  /// limit, and only if the disk has room for it beside the reserve.
  @Test func snapshotsComeOnlyFromTheLeaderAndFitOnDisk() throws {
    let delegate = RecordingDelegate()
    delegate.freeBytes = 1 << 20
    var options = TransportOptions()
    options.maxSnapshotBytes = 1 << 30

    let follower = try inboundChannel(delegate: delegate, admission: members(1, 2, 3), options: options)
    _ = try? follower.writeInbound(snapshotStream(from: 3, term: 5, announcing: 100))
    #expect(!follower.isActive)

    let huge = try inboundChannel(delegate: delegate, admission: members(1, 2, 3), options: options)
    _ = try? huge.writeInbound(snapshotStream(from: 1, term: 5, announcing: 1 << 40))
    #expect(!huge.isActive)

    let noRoom = try inboundChannel(delegate: delegate, admission: members(1, 2, 3), options: options)
    _ = try? noRoom.writeInbound(snapshotStream(from: 1, term: 5, announcing: 2 << 20))
    #expect(!noRoom.isActive)
    #expect(
      delegate.refusals.map(\.reason) == [.snapshotNotFromLeader, .snapshotTooLarge, .snapshotTooLarge])

    let leader = try inboundChannel(delegate: delegate, admission: members(1, 2, 3), options: options)
    try leader.writeInbound(snapshotStream(from: 1, term: 5, announcing: 100))
    #expect(leader.isActive)
    let newerTerm = try inboundChannel(delegate: delegate, admission: members(1, 2, 3), options: options)
    try newerTerm.writeInbound(snapshotStream(from: 3, term: 6, announcing: 100))
    #expect(newerTerm.isActive)
  }

  /// A connection that says nothing, or stops halfway through a frame, or goes quiet, is closed
  /// at its deadline.
  @Test func deadlinesCloseSilentAndStalledConnections() throws {
    var options = TransportOptions()
    options.helloTimeout = .seconds(5)
    options.frameTimeout = .seconds(30)
    options.idleTimeout = .seconds(60)
    let delegate = RecordingDelegate()

    let silent = try inboundChannel(delegate: delegate, options: options)
    let loop = silent.embeddedEventLoop
    loop.advanceTime(by: .seconds(4))
    #expect(silent.isActive)
    loop.advanceTime(by: .seconds(2))
    #expect(!silent.isActive)

    let stalled = try inboundChannel(delegate: delegate, options: options)
    var partial = hello(from: 1)
    partial.writeBytes([0, 0, 1, 0, 2, 0, 0])  // A 256-byte message frame, 3 bytes of it.
    try stalled.writeInbound(partial)
    stalled.embeddedEventLoop.advanceTime(by: .seconds(29))
    #expect(stalled.isActive)
    stalled.embeddedEventLoop.advanceTime(by: .seconds(2))
    #expect(!stalled.isActive)

    let quiet = try inboundChannel(delegate: delegate, options: options)
    try quiet.writeInbound(hello(from: 1))
    quiet.embeddedEventLoop.advanceTime(by: .seconds(59))
    #expect(quiet.isActive)
    quiet.embeddedEventLoop.advanceTime(by: .seconds(2))
    #expect(!quiet.isActive)
    #expect(delegate.refusals.map(\.reason) == [.helloTimeout, .frameTimeout, .idleTimeout])
  }

  /// Partial frames across connections share one budget; a connection that would exceed it is
  /// closed, and closing returns its share.
  @Test func partialFramesShareOneBudget() throws {
    let budget = PeerBufferBudget(limitBytes: 10_000)
    let delegate = RecordingDelegate()
    let first = try inboundChannel(delegate: delegate, budget: budget)
    var frame = hello(from: 1)
    frame.writeBytes([0, 1, 0, 0, 2] + [UInt8](repeating: 0, count: 6000))  // 6 KB of a 64 KiB frame.
    try first.writeInbound(frame)
    #expect(budget.usedBytes == 6005)

    let second = try inboundChannel(delegate: delegate, budget: budget)
    _ = try? second.writeInbound(frame)
    #expect(!second.isActive)
    #expect(budget.usedBytes == 6005)
    #expect(delegate.refusals.map(\.reason) == [.bufferBudget])

    _ = try? first.close().wait()
    #expect(budget.usedBytes == 0)
  }

  /// At most `maxInboundConnections` are open. A newcomer to a full table takes the slot of the
  /// oldest connection still without a hello; when every connection has introduced itself, the
  /// newcomer is refused.
  @Test func inboundConnectionsAreBounded() async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let delegate = RecordingDelegate()
    var options = TransportOptions()
    options.maxInboundConnections = 3
    // The suite runs beside CPU-bound simulator tests: no deadline may close these meanwhile.
    options.helloTimeout = .seconds(600)
    options.idleTimeout = .seconds(600)
    let transport = PeerTransport(
      localID: NodeID(2), group: group, options: options, logger: testLogger, delegate: delegate)
    let address = try await transport.listen(host: "127.0.0.1", port: 0)
    var silent: [any Channel] = []
    for _ in 0..<5 {
      silent.append(try await ClientBootstrap(group: group).connect(to: address).get())
    }
    #expect(
      await eventually(timeout: .seconds(120)) {
        delegate.refusals.filter { $0.reason == .evictedBeforeHello }.count == 2
      })
    #expect(transport.inboundConnectionCount == 3)
    for client in silent { try? await client.close() }
    #expect(await eventually(timeout: .seconds(120)) { transport.inboundConnectionCount == 0 })

    var members: [any Channel] = []
    for id: UInt64 in [1, 3, 4] {
      let client = try await ClientBootstrap(group: group).connect(to: address).get()
      try await client.writeAndFlush(hello(from: id))
      members.append(client)
    }
    #expect(await eventually(timeout: .seconds(120)) { transport.introducedInboundConnectionCount == 3 })
    let late = try await ClientBootstrap(group: group).connect(to: address).get()
    #expect(
      await eventually(timeout: .seconds(120)) {
        delegate.refusals.contains { $0.reason == .tooManyConnections }
      })
    #expect(transport.inboundConnectionCount == 3)
    for client in members + [late] { try? await client.close() }
    await transport.shutdown()
    try await group.shutdownGracefully()
  }

  /// A hello claiming the receiver's own id would escape every bound (its messages are dropped
  /// unseen by the core), so it is refused.
  @Test func aHelloClaimingTheNodesOwnIdIsRefused() throws {
    let delegate = RecordingDelegate()
    let channel = try inboundChannel(delegate: delegate)
    _ = try? channel.writeInbound(hello(from: 2))
    #expect(!channel.isActive)
    #expect(delegate.refusals.map(\.reason) == [.unknownPeer])
  }

  /// One snapshot stream at a time: a second, while one arrives, is refused; once the first ends,
  /// the next is taken.
  @Test func oneSnapshotStreamAtATime() throws {
    let delegate = RecordingDelegate()
    let slot = SnapshotSlot()
    func channel() throws -> EmbeddedChannel {
      let channel = EmbeddedChannel()
      try channel.pipeline.syncOperations.addHandler(
        ByteToMessageHandler(FrameDecoder(maxFrameBytes: 1 << 20)))
      try channel.pipeline.syncOperations.addHandler(
        InboundConnectionHandler(
          localID: NodeID(2), delegate: delegate, logger: testLogger, admission: { Self.members([1, 2, 3]) },
          snapshotSlot: slot))
      try connect(channel)
      return channel
    }
    let first = try channel()
    try first.writeInbound(snapshotStream(from: 1, term: 5, announcing: 100))
    let second = try channel()
    _ = try? second.writeInbound(snapshotStream(from: 1, term: 5, announcing: 100))
    #expect(first.isActive && !second.isActive)
    #expect(delegate.refusals.map(\.reason) == [.snapshotInProgress])
    _ = try? first.close().wait()
    let third = try channel()
    try third.writeInbound(snapshotStream(from: 1, term: 5, announcing: 100))
    #expect(third.isActive)
  }

  /// Addresses that hellos advertise are learned only while the node is joining, and only a few;
  /// once it has joined, they are forgotten.
  @Test func learnedAddressesAreBoundedAndOnlyWhileJoining() async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let delegate = RecordingDelegate()
    let transport = PeerTransport(localID: NodeID(2), group: group, logger: testLogger, delegate: delegate)
    let address = try await transport.listen(host: "127.0.0.1", port: 0)
    for id in 100..<120 {
      let client = try await ClientBootstrap(group: group).connect(to: address).get()
      var buffer = client.allocator.buffer(capacity: 64)
      buffer.writeHello(
        WireFormat.Hello(
          version: WireFormat.protocolVersion, kind: .messages, from: NodeID(UInt64(id)), to: NodeID(2),
          advertisedAddress: "127.0.0.1:1"))
      // On a loaded machine the server may already have closed a connection; the count below
      // needs only some of the 20 hellos to arrive.
      try? await client.writeAndFlush(buffer)
      try? await client.close()
    }
    #expect(
      await eventually(timeout: .seconds(120)) {
        transport.learnedAddressCount == TransportOptions().maxLearnedAddresses
      })
    var joined = PeerAdmission()
    joined.admitsStrangers = false
    joined.members = [NodeID(1), NodeID(2)]
    transport.updateAdmission(joined)
    #expect(transport.learnedAddressCount == 0)
    await transport.shutdown()
    try await group.shutdownGracefully()
  }
}
