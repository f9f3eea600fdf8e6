import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import RaftDBServer

/// The HTTP port tells HTTP/1.1 from HTTP/2 (gRPC) by a connection's first bytes, hands each to its
/// protocol's handlers with every byte read so far, and holds nothing it cannot decide on.
@Suite struct ProtocolSnifferTests {
  static let preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

  /// Records what reaches the handlers after the sniffer.
  final class Recorder: ChannelInboundHandler, @unchecked Sendable {
    // Only touched on the embedded channel's one thread.
    typealias InboundIn = ByteBuffer
    var received = ""
    var activations = 0
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
      var buffer = unwrapInboundIn(data)
      received += buffer.readString(length: buffer.readableBytes) ?? ""
    }
    func channelActive(context: ChannelHandlerContext) { activations += 1 }
  }

  struct Setup {
    let channel: EmbeddedChannel
    let http1: Recorder
    let http2: Recorder
  }

  func connect(handoff: HTTP2Handoff?) throws -> Setup {
    let channel = EmbeddedChannel()
    let http1 = Recorder()
    let http2 = Recorder()
    handoff?.install { channel in
      channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(http2) }
    }
    let sniffer = ProtocolSniffer(
      handoff: handoff, activity: ConnectionActivity(), idleTimeout: .seconds(60),
      logger: Logger(label: "test")
    ) { context in try context.pipeline.syncOperations.addHandler(http1) }
    try channel.pipeline.syncOperations.addHandler(sniffer)
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8091)).wait()
    return Setup(channel: channel, http1: http1, http2: http2)
  }

  @Test(arguments: [
    ("GET /key/foo HTTP/1.1\r\n", ProtocolSniffer.Decision.http1), ("POST /key", .http1), ("PUT", .http1),
    ("P", .undecided), ("PRI * HTTP/2.0\r\n", .undecided), ("PRI * HTTP/1.1\r\n", .http1), (preface, .http2),
    (preface + "\u{0}\u{0}\u{0}\u{4}", .http2),
  ])
  func theFirstBytesDecide(_ bytes: String, _ expected: ProtocolSniffer.Decision) {
    #expect(ProtocolSniffer.decide(ByteBuffer(string: bytes)) == expected)
  }

  @Test func anHTTP1RequestSplitAcrossReadsReachesTheHTTPHandlersWhole() throws {
    let setup = try connect(handoff: HTTP2Handoff())
    try setup.channel.writeInbound(ByteBuffer(string: "P"))
    #expect(setup.http1.received.isEmpty)
    try setup.channel.writeInbound(ByteBuffer(string: "OST /key HTTP/1.1\r\n"))
    try setup.channel.writeInbound(ByteBuffer(string: "Host: x\r\n\r\n"))
    #expect(setup.http1.received == "POST /key HTTP/1.1\r\nHost: x\r\n\r\n")
    #expect(setup.http2.received.isEmpty && setup.channel.isActive)
    // The sniffer has left the pipeline: nothing more is buffered or inspected.
    #expect(throws: (any Error).self) {
      try setup.channel.pipeline.syncOperations.handler(type: ProtocolSniffer.self)
    }
  }

  @Test func thePrefaceGoesToTheGRPCHandlersWithTheActivationTheyMissed() throws {
    let setup = try connect(handoff: HTTP2Handoff())
    let split = Self.preface.index(Self.preface.startIndex, offsetBy: 10)
    try setup.channel.writeInbound(ByteBuffer(string: String(Self.preface[..<split])))
    #expect(setup.http2.received.isEmpty)
    try setup.channel.writeInbound(ByteBuffer(string: String(Self.preface[split...]) + "SETTINGS"))
    #expect(setup.http2.received == Self.preface + "SETTINGS")
    #expect(setup.http2.activations == 1 && setup.http1.received.isEmpty)
  }

  @Test func anHTTP2ConnectionIsClosedWhereNoGRPCServerListens() throws {
    let notInstalled = try connect(handoff: nil)
    try notInstalled.channel.writeInbound(ByteBuffer(string: Self.preface))
    #expect(!notInstalled.channel.isActive && notInstalled.http1.received.isEmpty)

    let handoff = HTTP2Handoff()
    let uninstalled = try connect(handoff: handoff)
    handoff.uninstall()
    try uninstalled.channel.writeInbound(ByteBuffer(string: Self.preface))
    #expect(!uninstalled.channel.isActive && uninstalled.http2.received.isEmpty)
  }

  @Test func aConnectionThatNeverDecidesIsClosedAtTheIdleTimeout() throws {
    let setup = try connect(handoff: HTTP2Handoff())
    try setup.channel.writeInbound(ByteBuffer(string: "PRI * HT"))
    setup.channel.embeddedEventLoop.advanceTime(by: .seconds(59))
    #expect(setup.channel.isActive)
    setup.channel.embeddedEventLoop.advanceTime(by: .seconds(1))
    #expect(!setup.channel.isActive)
  }
}
