import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// The HTTP/1.1 server of the client API, directly on SwiftNIO: connections live on the network
/// event loops and requests are answered there (see `RaftDBAPI` for why there is no framework in
/// between). It bounds the number of open connections, closes connections silent for the idle
/// timeout, and shuts down gracefully: it stops accepting, lets each connection finish the request it
/// is serving, then closes it.
public final class RaftDBHTTPServer: Sendable {
  private let listener: any Channel
  private let connections: ConnectionRegistry
  private let logger: Logger

  /// Where the server listens (the real port when asked for port 0).
  public var localAddress: SocketAddress? { listener.localAddress }

  private init(listener: any Channel, connections: ConnectionRegistry, logger: Logger) {
    self.listener = listener
    self.connections = connections
    self.logger = logger
  }

  /// Binds `host:port` and starts serving `node`'s API on `group`'s loops.
  public static func start(
    node: RaftDBNode, host: String, port: Int, group: any EventLoopGroup, logger: Logger
  ) async throws -> RaftDBHTTPServer {
    let api = RaftDBAPI(node: node)
    let maxBodyBytes = node.options.maxRequestBytes
    let idleTimeout = TimeAmount.seconds(Int64(node.options.httpIdleTimeoutSeconds))
    let connections = ConnectionRegistry(limit: node.options.maxConnections, metrics: node.metrics)
    let listener = try await ServerBootstrap(group: group)
      .serverChannelOption(.backlog, value: 256)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
      .childChannelOption(.maxMessagesPerRead, value: 16)
      .childChannelInitializer { channel in
        guard connections.admit(channel) else {
          return channel.eventLoop.makeFailedFuture(ConnectionLimitReached())
        }
        return channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: idleTimeout))
          try channel.pipeline.syncOperations.configureHTTPServerPipeline(
            withPipeliningAssistance: true, withErrorHandling: false)
          try channel.pipeline.syncOperations.addHandler(
            HTTPConnectionHandler(api: api, maxBodyBytes: maxBodyBytes))
        }
      }
      .bind(host: host, port: port)
      .get()
    logger.info("HTTP API listening on \(host):\(port)")
    return RaftDBHTTPServer(listener: listener, connections: connections, logger: logger)
  }

  /// Stops accepting, asks every connection to close once its current request is answered, and
  /// after `gracePeriod` closes whatever is still open.
  public func shutdown(gracePeriod: Duration = .seconds(10)) async {
    try? await listener.close()
    connections.stopAdmitting()
    for channel in connections.open {
      channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
    }
    let deadline = ContinuousClock.now + gracePeriod
    // A cancelled task does not sleep, so stop waiting then rather than spin.
    while connections.count > 0 && ContinuousClock.now < deadline && !Task.isCancelled {
      try? await Task.sleep(for: .milliseconds(10))
    }
    let stragglers = connections.open
    if !stragglers.isEmpty {
      logger.warning("closing \(stragglers.count) HTTP connections still busy after \(gracePeriod)")
      for channel in stragglers { try? await channel.close() }
    }
  }
}

struct ConnectionLimitReached: Error {}

/// The open connections, for the limit and for shutdown.
final class ConnectionRegistry: Sendable {
  private struct State {
    var open: [ObjectIdentifier: any Channel] = [:]
    var accepting = true
  }
  private let state = NIOLockedValueBox(State())
  private let limit: Int
  private let metrics: NodeMetrics

  init(limit: Int, metrics: NodeMetrics) {
    self.limit = limit
    self.metrics = metrics
  }

  var count: Int { state.withLockedValue { $0.open.count } }

  /// The connections open now.
  var open: [any Channel] { state.withLockedValue { Array($0.open.values) } }

  /// Registers a new connection unless the server is at its limit or shutting down.
  func admit(_ channel: any Channel) -> Bool {
    // The gauge is set under the lock so that concurrent changes reach it in order.
    let admitted = state.withLockedValue { state in
      guard state.accepting, state.open.count < limit else { return false }
      state.open[ObjectIdentifier(channel)] = channel
      metrics.openConnections.record(state.open.count)
      return true
    }
    guard admitted else {
      metrics.refusedConnections.increment()
      return false
    }
    channel.closeFuture.whenComplete { _ in
      self.state.withLockedValue { state in
        state.open.removeValue(forKey: ObjectIdentifier(channel))
        self.metrics.openConnections.record(state.open.count)
      }
    }
    return true
  }

  /// Refuses further connections.
  func stopAdmitting() { state.withLockedValue { $0.accepting = false } }
}
