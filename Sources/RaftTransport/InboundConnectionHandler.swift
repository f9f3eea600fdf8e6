import Logging
import NIOCore
import Raft
import RaftStorage

/// Handles one accepted connection: a message stream (batched to the node once per read) or a
/// snapshot stream (written to a sink, then handed to the node whole). Any protocol violation closes
/// the connection with a log line; the node never sees a half-valid message.
final class InboundConnectionHandler: ChannelInboundHandler {
  typealias InboundIn = Frame
  typealias OutboundOut = ByteBuffer

  private enum State {
    case awaitingHello
    case messages(from: NodeID)
    case snapshotHeader(from: NodeID)
    case snapshotData(
      from: NodeID, message: Message, sink: any SnapshotSink, expected: UInt64, received: UInt64)
    case done
  }

  private let localID: NodeID
  private let delegate: any TransportDelegate
  private let logger: Logger
  private let learnAddress: @Sendable (NodeID, String) -> Void
  private var state = State.awaitingHello
  private var batch: [Message] = []

  init(
    localID: NodeID, delegate: any TransportDelegate, logger: Logger,
    learnAddress: @escaping @Sendable (NodeID, String) -> Void = { _, _ in }
  ) {
    self.localID = localID
    self.delegate = delegate
    self.logger = logger
    self.learnAddress = learnAddress
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    do {
      try handle(unwrapInboundIn(data), context: context)
    } catch {
      refuse(context: context, error)
    }
  }

  private func handle(_ frame: Frame, context: ChannelHandlerContext) throws {
    switch (state, frame) {
    case (.awaitingHello, .hello(let hello)):
      guard hello.to == localID else {
        throw WireError.malformed("connection for \(hello.to) reached \(localID) (stale address?)")
      }
      if !hello.advertisedAddress.isEmpty { learnAddress(hello.from, hello.advertisedAddress) }
      state = hello.kind == .messages ? .messages(from: hello.from) : .snapshotHeader(from: hello.from)
    case (.messages(let from), .message(let message)):
      guard message.from == from, message.to == localID else {
        throw WireError.malformed("message \(message.from)->\(message.to) on a stream from \(from)")
      }
      batch.append(message)
    case (.snapshotHeader(let from), .message(let message)):
      guard case .installSnapshot(let metadata) = message.body, message.from == from, message.to == localID
      else {
        throw WireError.malformed("snapshot stream must start with an installSnapshot message")
      }
      state = .done  // Until the sink exists.
      let sink = try delegate.transportBeginReceivingSnapshot(from: from, metadata: metadata)
      state = .snapshotData(from: from, message: message, sink: sink, expected: 0, received: 0)
    case (.snapshotData(let from, let message, let sink, 0, 0), .snapshotBegin(_, let size)):
      state = .snapshotData(from: from, message: message, sink: sink, expected: size, received: 0)
    case (
      .snapshotData(let from, let message, let sink, let expected, let received), .snapshotChunk(var chunk)
    ):
      let bytes = chunk.readBytes(length: chunk.readableBytes) ?? []
      guard received + UInt64(bytes.count) <= expected else {
        throw WireError.malformed("snapshot data exceeds the announced \(expected) bytes")
      }
      try sink.write(bytes)
      state = .snapshotData(
        from: from, message: message, sink: sink, expected: expected, received: received + UInt64(bytes.count)
      )
    case (.snapshotData(_, let message, let sink, let expected, let received), .snapshotEnd):
      guard received == expected else {
        throw WireError.malformed("snapshot ended after \(received) of \(expected) bytes")
      }
      state = .done
      delegate.transportReceivedSnapshot(ReceivedSnapshot(message: message, sink: sink))
      var ack = context.channel.allocator.buffer(capacity: 8)
      ack.writeFrame(.snapshotAck) { _ in }
      context.writeAndFlush(wrapOutboundOut(ack), promise: nil)
    default:
      throw WireError.malformed("unexpected frame in this state")
    }
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    guard !batch.isEmpty else { return }
    delegate.transportReceived(batch)
    batch.removeAll(keepingCapacity: true)
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    refuse(context: context, error)
  }

  func channelInactive(context: ChannelHandlerContext) {
    if case .snapshotData(let from, _, let sink, _, _) = state {
      logger.warning("snapshot stream from \(from) broke off; discarding it")
      sink.abort()
    }
    state = .done
    context.fireChannelInactive()
  }

  private func refuse(context: ChannelHandlerContext, _ error: any Error) {
    if case .snapshotData(_, _, let sink, _, _) = state { sink.abort() }
    state = .done
    logger.warning(
      "closing peer connection: \(error)",
      metadata: ["remote": "\(context.remoteAddress.map { "\($0)" } ?? "?")"])
    context.close(promise: nil)
  }
}
