import GRPCNIOTransportCore
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// gRPC on the HTTP API's port, as etcd serves gRPC and its gateway on one client URL.
///
/// The HTTP server owns the socket and tells the protocols apart by the first bytes (see
/// `ProtocolSniffer` in RaftDBServer); it hands each HTTP/2 connection to `accept`, which
/// configures it with grpc-swift's server pipeline on the connection's loop.
///
/// grpc-swift's transport takes its connections from a `ListenerFactory`, as an async channel
/// wrapping a listening channel whose reads are configured connections. The HTTP listener cannot be
/// that channel: its reads are the accepted sockets, which its pipeline's tail must register, and the
/// async channel would consume them. So the factory binds a listener of its own on the loopback
/// (port 0, backlog 1) that never accepts, because `ConnectionInlet` swallows its read requests, and
/// the inlet puts the handed-over connections into that pipeline instead. All of it is public API of
/// grpc-swift-nio-transport (2.6's `HTTP2ServerTransport.Custom`) and SwiftNIO.
struct SharedPortListener: HTTP2ServerTransport.ListenerFactory {
  let eventLoopGroup: any EventLoopGroup
  let inlet: ConnectionInlet.Box

  func makeListeningChannel(
    listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
    connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator
  ) async throws -> NIOAsyncChannel<HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never> {
    let listener = try await ServerBootstrap(group: eventLoopGroup)
      .serverChannelOption(.backlog, value: 1)
      .serverChannelOption(.autoRead, value: false)
      .serverChannelInitializer { channel in listenerConfigurator.configure(channel: channel) }
      .bind(host: "127.0.0.1", port: 0)
      .get()
    let inlet = self.inlet
    return try await listener.eventLoop.submit {
      let handler = ConnectionInlet()
      try listener.pipeline.syncOperations.addHandler(handler)
      let connections = try NIOAsyncChannel<
        HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never
      >(wrappingChannelSynchronously: listener)
      // The async channel passes each connection on down the pipeline, whose tail would take it
      // for an accepted socket.
      try listener.pipeline.syncOperations.addHandler(ConnectionSink())
      inlet.open(NIOLoopBound(handler, eventLoop: listener.eventLoop), configurator: connectionConfigurator)
      return connections
    }.get()
  }
}

/// Puts HTTP/2 connections into the transport's listening pipeline, and keeps that listener from
/// ever accepting a socket of its own.
final class ConnectionInlet: ChannelDuplexHandler {
  typealias InboundIn = Never
  typealias InboundOut = HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel
  typealias OutboundIn = Never

  private var context: ChannelHandlerContext?

  func handlerAdded(context: ChannelHandlerContext) { self.context = context }
  func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

  /// The transport asking for connections: they come from the HTTP port, not from this socket.
  func read(context: ChannelHandlerContext) {}

  /// False once the listener has closed: nobody will serve the connection.
  func deliver(_ connection: InboundOut) -> Bool {
    guard let context, context.channel.isActive else { return false }
    context.fireChannelRead(wrapInboundOut(connection))
    context.fireChannelReadComplete()
    return true
  }

  /// The inlet once the transport listens, the configuration of its connections, and the
  /// connections handed over, to be told to go away at shutdown (grpc-swift's quiescing handler
  /// only knows the sockets its own listener accepted).
  final class Box: Sendable {
    private struct State {
      var inlet: NIOLoopBound<ConnectionInlet>?
      var configurator: HTTP2ServerTransport.ConnectionConfigurator?
      var connections: [ObjectIdentifier: any Channel] = [:]
      var closed = false
    }
    private let state = NIOLockedValueBox(State())

    func open(
      _ inlet: NIOLoopBound<ConnectionInlet>, configurator: HTTP2ServerTransport.ConnectionConfigurator
    ) {
      state.withLockedValue {
        $0.inlet = inlet
        $0.configurator = configurator
      }
    }

    /// Refuses further connections and asks each open one to finish its calls and close (HTTP/2
    /// GOAWAY).
    func close() {
      let open = state.withLockedValue { state in
        state.closed = true
        return Array(state.connections.values)
      }
      for channel in open {
        channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
      }
    }

    /// Configures `channel` (on its own loop) as a gRPC connection and hands it to the transport.
    /// Fails when the transport is not listening yet or any more.
    func accept(_ channel: any Channel) -> EventLoopFuture<Void> {
      let id = ObjectIdentifier(channel)
      let ready = state.withLockedValue {
        state -> (NIOLoopBound<ConnectionInlet>, HTTP2ServerTransport.ConnectionConfigurator)? in
        guard !state.closed, let inlet = state.inlet, let configurator = state.configurator else {
          return nil
        }
        state.connections[id] = channel
        return (inlet, configurator)
      }
      guard let (inlet, configurator) = ready else {
        return channel.eventLoop.makeFailedFuture(GRPCNotListening())
      }
      channel.closeFuture.whenComplete { [self] _ in
        _ = state.withLockedValue { $0.connections.removeValue(forKey: id) }
      }
      return configurator.configure(channel: channel, tls: .none).map { connection in
        inlet.eventLoop.execute {
          if !inlet.value.deliver(connection) { channel.close(promise: nil) }
        }
      }
    }
  }
}

/// The end of the transport's listening pipeline: connections stop here, once the async channel has
/// them.
final class ConnectionSink: ChannelInboundHandler {
  typealias InboundIn = HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

struct GRPCNotListening: Error, CustomStringConvertible {
  var description: String { "the gRPC server is not listening" }
}
