import NIOCore
import NIOPosix
import Raft
import RaftStorage

/// Streams one snapshot: hello, the installSnapshot message, the size, the data in chunks (each write
/// awaited, so a slow receiver slows the sender instead of filling memory), the end marker, then
/// waits for the receiver's acknowledgement that it holds the whole snapshot.
struct SnapshotSender {
  let transport: PeerTransport
  let message: Message
  let address: String
  let source: any SnapshotSource

  func run() async throws {
    guard let (host, port) = parseHostPort(address) else {
      throw WireError.malformed("bad address \(address)")
    }
    let options = transport.options
    let acknowledged = OneShot(transport.group.next().makePromise(of: Void.self))
    let channel = try await ClientBootstrap(group: acknowledged.eventLoop)
      .connectTimeout(options.connectTimeout)
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          let sync = channel.pipeline.syncOperations
          try sync.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: 1024)))
          try sync.addHandler(SnapshotAckHandler(acknowledged: acknowledged))
        }
      }
      .connect(host: host, port: port)
      .get()
    do {
      var header = channel.allocator.buffer(capacity: 256)
      header.writeHello(
        WireFormat.Hello(
          version: WireFormat.protocolVersion, kind: .snapshot, from: message.from, to: message.to,
          advertisedAddress: transport.advertisedAddress, clusterID: transport.clusterID))
      header.writeMessageFrame(message)
      header.writeFrame(.snapshotBegin) { buffer in
        buffer.writeSnapshotMetadata(source.metadata)
        buffer.writeInteger(UInt64(source.dataSize))
      }
      try await channel.writeAndFlush(header).get()
      while let chunk = try source.read(maxBytes: options.snapshotChunkBytes) {
        var frame = channel.allocator.buffer(capacity: chunk.count + 8)
        frame.writeFrame(.snapshotChunk) { $0.writeBytes(chunk) }
        try await channel.writeAndFlush(frame).get()
      }
      var end = channel.allocator.buffer(capacity: 8)
      end.writeFrame(.snapshotEnd) { _ in }
      try await channel.writeAndFlush(end).get()
      let timeout = channel.eventLoop.scheduleTask(in: options.snapshotAckTimeout) {
        acknowledged.fail(WireError.malformed("no acknowledgement for the snapshot"))
      }
      defer { timeout.cancel() }
      try await acknowledged.future.get()
      try? await channel.close()
    } catch {
      acknowledged.fail(error)
      try? await channel.close()
      throw error
    }
  }
}

/// A promise that tolerates being completed more than once (the first completion wins): the
/// acknowledgement, a timeout and a closing connection race to complete it.
final class OneShot: @unchecked Sendable {
  // Unchecked: `done` is only touched on the promise's event loop.
  private let promise: EventLoopPromise<Void>
  private var done = false

  init(_ promise: EventLoopPromise<Void>) { self.promise = promise }

  var eventLoop: any EventLoop { promise.futureResult.eventLoop }

  var future: EventLoopFuture<Void> { promise.futureResult }

  func succeed() { complete(.success(())) }

  func fail(_ error: any Error) { complete(.failure(error)) }

  private func complete(_ result: Result<Void, any Error>) {
    eventLoop.execute {
      guard !self.done else { return }
      self.done = true
      self.promise.completeWith(result)
    }
  }
}

private final class SnapshotAckHandler: ChannelInboundHandler {
  typealias InboundIn = Frame
  private let acknowledged: OneShot

  init(acknowledged: OneShot) { self.acknowledged = acknowledged }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .snapshotAck:
      acknowledged.succeed()
    case .helloAnswer(let verdict, let cluster) where verdict != .accepted:
      acknowledged.fail(
        WireError.malformed(
          "the receiver refused the snapshot stream: \(verdict == .wrongCluster ? "it belongs to another cluster" : "it does not run this group") (cluster \(HexID.format(cluster)))"
        ))
    default:
      acknowledged.fail(WireError.malformed("unexpected frame on a snapshot stream"))
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    acknowledged.fail(WireError.malformed("receiver closed the snapshot stream"))
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    acknowledged.fail(error)
    context.close(promise: nil)
  }
}
