import NIOCore
import NIOHTTP1

/// A response body written over time (a watch's event stream). The connection handler writes the
/// head, then hands the body an output; the body writes parts until it finishes, and hears of the
/// connection's writability (so that it writes only while the client reads) and of its end.
protocol HTTPStreamingBody: AnyObject, Sendable {
  /// On the connection's loop, once the head is written.
  func start(_ output: HTTPStreamOutput)
  /// On the connection's loop: the client is (or is no longer) keeping up with what is written.
  func writabilityChanged(_ writable: Bool)
  /// On the connection's loop: the connection closed, or the server is shutting down (the output
  /// is finished then). Also called when the response never started (the connection went first).
  func stop()
}

/// Where a streaming body writes, confined to its connection's loop (`eventLoop`). Finishing writes
/// the end of the body and closes the connection.
final class HTTPStreamOutput {
  let eventLoop: any EventLoop
  private let context: ChannelHandlerContext
  private let onFinish: () -> Void
  private(set) var isFinished = false

  init(context: ChannelHandlerContext, onFinish: @escaping () -> Void) {
    self.context = context
    eventLoop = context.eventLoop
    self.onFinish = onFinish
  }

  var isWritable: Bool { context.channel.isWritable }
  var allocator: ByteBufferAllocator { context.channel.allocator }

  func write(_ bytes: [UInt8]) {
    guard !isFinished else { return }
    let part = HTTPServerResponsePart.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))
    context.writeAndFlush(NIOAny(part), promise: nil)
  }

  func finish() {
    guard !isFinished else { return }
    isFinished = true
    onFinish()
  }
}
