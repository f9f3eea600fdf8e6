import Logging
import NIOConcurrencyHelpers
import NIOCore

/// Where the HTTP port sends a connection that opens with HTTP/2's preface: a gRPC client (etcd's
/// v3 API), as etcd serves gRPC and its JSON gateway on one client URL. The gRPC server installs its
/// acceptor once it listens; until then (and when no gRPC server runs) such connections are closed.
///
/// The acceptor runs on the connection's event loop and must configure the connection's pipeline
/// before the future it returns completes: the bytes read so far are passed on to the handlers it
/// added when it does.
public final class HTTP2Handoff: Sendable {
  public typealias Acceptor = @Sendable (any Channel) -> EventLoopFuture<Void>
  private let acceptor = NIOLockedValueBox<Acceptor?>(nil)

  public init() {}

  /// Starts sending HTTP/2 connections to `acceptor`.
  public func install(_ acceptor: @escaping Acceptor) {
    self.acceptor.withLockedValue { $0 = acceptor }
  }

  /// Stops sending them; later ones are closed.
  public func uninstall() {
    acceptor.withLockedValue { $0 = nil }
  }

  func accept(_ channel: any Channel) -> EventLoopFuture<Void> {
    guard let acceptor = acceptor.withLockedValue({ $0 }) else {
      return channel.eventLoop.makeFailedFuture(HTTP2NotServed())
    }
    return acceptor(channel)
  }
}

struct HTTP2NotServed: Error, CustomStringConvertible {
  var description: String { "no gRPC server is listening on this port" }
}

/// The first handler of every client connection on the HTTP port: it reads until the bytes tell
/// HTTP/1.1 from HTTP/2's connection preface, then installs that protocol's handlers after itself,
/// passes on what it read and leaves the pipeline. HTTP/1.1 methods never begin with "PRI", so
/// the first bytes that differ from the preface decide; only a client that sends part of the
/// preface and stops is held, and the idle timeout closes it.
final class ProtocolSniffer: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer

  /// HTTP/2's client connection preface (RFC 9113 §3.4).
  static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
  /// What a connection may send while its HTTP/2 handlers are installed (the preface, SETTINGS and a
  /// first request); beyond it the connection is closed.
  static let maxBufferedBytes = 64 << 10

  enum Decision: Equatable { case undecided, http1, http2 }

  private let installHTTP1: (ChannelHandlerContext) throws -> Void
  private let handoff: HTTP2Handoff?
  private let activity: ConnectionActivity
  private let idleTimeout: TimeAmount
  private let logger: Logger
  private var buffered: ByteBuffer?
  private var switching = false
  private var timer: Scheduled<Void>?

  init(
    handoff: HTTP2Handoff?, activity: ConnectionActivity, idleTimeout: TimeAmount, logger: Logger,
    installHTTP1: @escaping (ChannelHandlerContext) throws -> Void
  ) {
    self.handoff = handoff
    self.activity = activity
    self.idleTimeout = idleTimeout
    self.logger = logger
    self.installHTTP1 = installHTTP1
  }

  /// Which protocol `bytes` (the first bytes of a connection) begin.
  static func decide(_ bytes: ByteBuffer) -> Decision {
    let view = bytes.readableBytesView
    for (offset, byte) in view.prefix(preface.count).enumerated() where byte != preface[offset] {
      return .http1
    }
    return view.count >= preface.count ? .http2 : .undecided
  }

  func handlerAdded(context: ChannelHandlerContext) {
    activity.waiting(since: context.eventLoop.now)
    let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
    timer = context.eventLoop.scheduleTask(in: idleTimeout) { bound.value.close(promise: nil) }
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    timer?.cancel()
    timer = nil
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    var bytes = unwrapInboundIn(data)
    if buffered == nil {
      buffered = bytes
    } else {
      buffered!.writeBuffer(&bytes)
    }
    guard !switching else {
      if buffered!.readableBytes > Self.maxBufferedBytes { context.close(promise: nil) }
      return
    }
    switch Self.decide(buffered!) {
    case .undecided: return
    case .http1:
      do {
        try installHTTP1(context)
      } catch {
        context.close(promise: nil)
        return
      }
      forwardAndLeave(context)
    case .http2: switchToHTTP2(context)
    }
  }

  private func switchToHTTP2(_ context: ChannelHandlerContext) {
    guard let handoff else {
      logger.debug("HTTP/2 connection closed: this port serves no gRPC")
      context.close(promise: nil)
      return
    }
    switching = true
    // A gRPC connection is never the one chosen to make room: its calls may be long-lived streams.
    activity.markBusy()
    let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
    handoff.accept(context.channel).whenComplete { result in
      let (sniffer, context) = bound.value
      switch result {
      case .success:
        // The handlers were added to an active channel: give them the activation they missed
        // (gRPC's keepalive and idle timers start on it), then the bytes.
        context.fireChannelActive()
        sniffer.forwardAndLeave(context)
      case .failure(let error):
        sniffer.logger.debug("HTTP/2 connection closed: \(error)")
        context.close(promise: nil)
      }
    }
  }

  private func forwardAndLeave(_ context: ChannelHandlerContext) {
    timer?.cancel()
    timer = nil
    if let buffered, buffered.readableBytes > 0 {
      self.buffered = nil
      context.fireChannelRead(wrapInboundOut(buffered))
      context.fireChannelReadComplete()
    }
    context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
  }
}
