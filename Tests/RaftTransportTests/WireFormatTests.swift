import NIOCore
import NIOEmbedded
import Raft
import Testing

@testable import RaftTransport

@Suite struct WireFormatTests {
  /// An embedded channel is inactive until connected; connect it so "closed" can be observed.
  func connect(_ channel: EmbeddedChannel) throws {
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    #expect(channel.isActive)
  }

  /// Every message kind survives encode → frame decode unchanged.
  @Test func everyMessageKindRoundTrips() throws {
    var decoder = FrameDecoder(maxFrameBytes: 1 << 20, helloDecoded: true)
    var buffer = ByteBufferAllocator().buffer(capacity: 4096)
    let messages = sampleMessages(includeSnapshot: true)
    for message in messages { buffer.writeMessageFrame(message) }
    for message in messages {
      let frame = try #require(try decoder.decodeFrame(from: &buffer))
      guard case .message(let decoded) = frame else {
        Issue.record("expected a message frame, got \(frame)")
        continue
      }
      #expect(sameMessage(decoded, message), "\(message)")
    }
    #expect(buffer.readableBytes == 0)
  }

  /// A frame split at every byte boundary decodes only once it is whole.
  @Test func partialFramesWaitForMoreBytes() throws {
    var whole = ByteBufferAllocator().buffer(capacity: 1024)
    whole.writeMessageFrame(sampleMessages()[5])
    let bytes = whole.readableBytesView
    var decoder = FrameDecoder(maxFrameBytes: 1 << 20, helloDecoded: true)
    for cut in 0..<bytes.count {
      var partial = ByteBufferAllocator().buffer(bytes: bytes.prefix(cut))
      #expect(try decoder.decodeFrame(from: &partial) == nil, "cut at \(cut)")
    }
  }

  static let groupOne: [UInt8] = [0, 0, 0, 1]
  static let malformedFrames: [(String, [UInt8])] = [
    ("oversized length", [0x7F, 0xFF, 0xFF, 0xFF, 2]),
    ("empty frame", [0, 0, 0, 0]),
    ("unknown frame type", [0, 0, 0, 1, 99]),
    ("bad magic", [0, 0, 0, 5, 1, 0xDE, 0xAD, 0xBE, 0xEF]),
    ("unknown message tag", [0, 0, 0, 30, 2] + groupOne + [77] + [UInt8](repeating: 1, count: 24)),
    ("truncated message", [0, 0, 0, 8, 2] + groupOne + [5, 0, 0]),
    (
      "node 0 as sender",
      [0, 0, 0, 30, 2] + groupOne + [8] + [UInt8](repeating: 0, count: 8) + [UInt8](repeating: 1, count: 16)
    ),
    ("message for an unknown group", [0, 0, 0, 30, 2, 0, 0, 0, 7, 8] + [UInt8](repeating: 1, count: 24)),
  ]

  /// Hostile or broken input is refused with a reason; nothing traps.
  @Test(arguments: malformedFrames)
  func malformedFramesAreRefused(name: String, bytes: [UInt8]) {
    var decoder = FrameDecoder(maxFrameBytes: 1 << 20, helloDecoded: true)
    var buffer = ByteBufferAllocator().buffer(bytes: bytes)
    #expect(throws: WireError.self, "\(name)") { _ = try decoder.decodeFrame(from: &buffer) }
  }

  @Test func wrongProtocolVersionIsRefused() {
    var buffer = ByteBufferAllocator().buffer(capacity: 64)
    buffer.writeHello(WireFormat.Hello(version: 9, kind: .messages, from: NodeID(1), to: NodeID(2)))
    var decoder = FrameDecoder(maxFrameBytes: 1 << 20)
    #expect(throws: WireError.unsupportedVersion(9)) { _ = try decoder.decodeFrame(from: &buffer) }
  }

  /// Thousands of random byte strings: the decoder refuses or decodes, never traps.
  @Test func randomBytesNeverTrap() {
    var generator = SplitMix64(seed: 7)
    var decoder = FrameDecoder(maxFrameBytes: 4096, helloDecoded: true)
    for _ in 0..<5000 {
      let length = Int(generator.next() % 80)
      var bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
      if bytes.count >= 5 && generator.next() % 2 == 0 {
        // Make the length plausible so the payload decoders get exercised.
        let payload = UInt32(bytes.count - 4)
        bytes[0] = 0
        bytes[1] = 0
        bytes[2] = UInt8(payload >> 8)
        bytes[3] = UInt8(payload & 0xFF)
        bytes[4] = UInt8(1 + generator.next() % 6)
      }
      var buffer = ByteBufferAllocator().buffer(bytes: bytes)
      _ = try? decoder.decodeFrame(from: &buffer)
    }
  }

  /// On a live pipeline, garbage closes the connection and the node receives nothing.
  @Test func garbageClosesTheConnectionAndDeliversNothing() throws {
    let delegate = RecordingDelegate()
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: 1024)))
    try channel.pipeline.syncOperations.addHandler(
      InboundConnectionHandler(localID: NodeID(2), delegate: delegate, logger: testLogger))
    try connect(channel)
    var buffer = channel.allocator.buffer(capacity: 64)
    buffer.writeHello(
      WireFormat.Hello(version: WireFormat.protocolVersion, kind: .messages, from: NodeID(1), to: NodeID(2)))
    buffer.writeBytes([0, 0, 0, 3, 2, 0xFF, 0xFF])
    _ = try? channel.writeInbound(buffer)
    #expect(!channel.isActive)
    #expect(delegate.messages.isEmpty)
  }

  /// A message before the hello, or a hello meant for another node, is refused.
  @Test func streamsMustIntroduceThemselvesToTheRightNode() throws {
    for hello in [nil, NodeID(3)] as [NodeID?] {
      let delegate = RecordingDelegate()
      let channel = EmbeddedChannel()
      try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: 4096)))
      try channel.pipeline.syncOperations.addHandler(
        InboundConnectionHandler(localID: NodeID(2), delegate: delegate, logger: testLogger))
      try connect(channel)
      var buffer = channel.allocator.buffer(capacity: 256)
      if let hello {
        buffer.writeHello(
          WireFormat.Hello(version: WireFormat.protocolVersion, kind: .messages, from: NodeID(1), to: hello))
      }
      buffer.writeMessageFrame(sampleMessages()[0])
      _ = try? channel.writeInbound(buffer)
      #expect(!channel.isActive)
      #expect(delegate.messages.isEmpty)
    }
  }

  /// Valid messages arrive in order, delivered in one batch per read.
  @Test func validStreamDeliversInOrder() throws {
    let delegate = RecordingDelegate()
    let channel = EmbeddedChannel()
    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: 1 << 20)))
    try channel.pipeline.syncOperations.addHandler(
      InboundConnectionHandler(localID: NodeID(2), delegate: delegate, logger: testLogger))
    try connect(channel)
    var buffer = channel.allocator.buffer(capacity: 4096)
    buffer.writeHello(
      WireFormat.Hello(version: WireFormat.protocolVersion, kind: .messages, from: NodeID(1), to: NodeID(2)))
    let messages = sampleMessages()
    for message in messages { buffer.writeMessageFrame(message) }
    try channel.writeInbound(buffer)
    channel.pipeline.fireChannelReadComplete()
    #expect(channel.isActive)
    #expect(delegate.messages.count == messages.count)
    #expect(zip(delegate.messages, messages).allSatisfy(sameMessage))
  }

  /// The verifier's fault proxy decides which link a connection is from its hello; it must read
  /// the hello as a node does (it read version 1's offsets after version 2 added the cluster and
  /// group ids, so no partition cut any link).
  @Test func toolsReadTheHelloAsTheReceiverDoes() {
    var bytes = ByteBufferAllocator().buffer(capacity: 64)
    bytes.writeHello(
      WireFormat.Hello(
        version: WireFormat.protocolVersion, kind: .messages, from: NodeID(0xABC), to: NodeID(0xDEF),
        clusterID: 0xA))
    guard case .hello(let decoded) = WireFormat.leadingHello(bytes) else {
      Issue.record("the hello was not decoded")
      return
    }
    #expect(decoded.from == NodeID(0xABC) && decoded.to == NodeID(0xDEF) && decoded.clusterID == 0xA)
    guard case .incomplete = WireFormat.leadingHello(bytes.getSlice(at: 0, length: 20)!) else {
      Issue.record("a partial hello must read as incomplete")
      return
    }
    var message = ByteBufferAllocator().buffer(capacity: 64)
    message.writeMessageFrame(Message(from: NodeID(1), to: NodeID(2), term: 1, body: .timeoutNow))
    guard case .invalid = WireFormat.leadingHello(message) else {
      Issue.record("a stream that does not start with a hello is invalid")
      return
    }
  }
}
