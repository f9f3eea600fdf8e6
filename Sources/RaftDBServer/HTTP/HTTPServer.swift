import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import RaftTransport

/// The HTTP/1.1 server of the client API, directly on SwiftNIO: connections live on the network
/// event loops and requests are answered there (see `HTTPAdapter` for why there is no framework in
/// between). It bounds the number of open connections (evicting the one longest waiting for its
/// client when the table is full, see `ConnectionRegistry`), closes connections silent for the idle
/// timeout or slower than the head and body deadlines, bounds the request bodies held across all
/// connections, and shuts down gracefully: it stops accepting, lets each connection finish the
/// request it is serving, then closes it.
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

  /// Binds `host:port` and starts serving `node`'s API on `group`'s loops. Connections that open
  /// with HTTP/2's preface go to `http2` (etcd's gRPC API); the rest are HTTP/1.1.
  public static func start(
    node: RaftDBNode, host: String, port: Int, group: any EventLoopGroup, logger: Logger,
    http2: HTTP2Handoff? = nil
  ) async throws -> RaftDBHTTPServer {
    let api = HTTPAdapter(service: node.service, metrics: node.metrics)
    let options = node.options
    let limits = HTTPLimits(
      maxBodyBytes: options.maxRequestBytes,
      headerTimeout: .seconds(Int64(options.httpHeaderTimeoutSeconds)),
      bodyTimeout: .seconds(Int64(options.httpBodyTimeoutSeconds)),
      idleTimeout: .seconds(Int64(options.httpIdleTimeoutSeconds)))
    let budget = RequestBodyBudget(
      limitBytes: options.maxBufferedRequestBytes, gauge: node.metrics.bufferedRequestBytes)
    let refusals = HTTPRefusals(metrics: node.metrics, logger: logger, summaryLoop: group.next())
    let connections = ConnectionRegistry(limit: options.maxConnections, metrics: node.metrics)
    let listener = try await ServerBootstrap(group: group)
      .serverChannelOption(.backlog, value: 256)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .serverChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(AcceptBackoffHandler())
          try channel.pipeline.syncOperations.addHandler(HTTPAcceptFailureHandler(node: node))
        }
      }
      .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
      .childChannelOption(.maxMessagesPerRead, value: 16)
      .childChannelInitializer { channel in
        let activity = ConnectionActivity()
        guard connections.admit(channel, activity: activity) else {
          return channel.eventLoop.makeFailedFuture(ConnectionLimitReached())
        }
        let sniffer = ProtocolSniffer(
          handoff: http2, activity: activity, idleTimeout: limits.idleTimeout, logger: logger
        ) { context in
          try context.pipeline.syncOperations.addRaftDBHTTPHandlers(
            api: api, limits: limits, budget: budget, activity: activity, refusals: refusals)
        }
        return channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(sniffer)
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

/// Reports a client listener that cannot accept (out of file descriptors, most often) to the node,
/// which counts and logs it and, if it leads, hands its leadership over (as for the peer listener).
private final class HTTPAcceptFailureHandler: ChannelInboundHandler {
  typealias InboundIn = any Channel
  let node: RaftDBNode

  init(node: RaftDBNode) { self.node = node }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.fireChannelRead(data) }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    node.transportRefused(
      TransportRefusal(
        reason: .acceptFailed, remote: "", detail: "cannot accept client connections: \(error)"))
  }
}

/// The open connections, for the limit and for shutdown.
///
/// When the table is full, a newcomer takes the slot of the connection that has been waiting longest
/// for its own client: idle between requests, or still sending a request's head or body (ranked by
/// when that wait began). That connection is closed, with a 408 if it was inside a request. A
/// connection whose request is at the node, or whose answer is being written, is never evicted; only
/// when every connection is busy like that is the newcomer refused.
///
/// Why eviction rather than a reserve of slots: a reserve only moves the number an attacker has to
/// reach, and slow connections cost the attacker nothing to hold, whereas a connection that is
/// waiting for its client has nothing to lose but a retry (HTTP clients retry a request on a reused
/// connection that closes, and nginx frees idle keep-alive connections the same way when it runs
/// out). With eviction, to keep a legitimate client out an attacker must open `limit` new connections
/// in the time that client takes to send its request, and each slow connection is held at most until
/// `limit` newer ones arrive or its head/body deadline passes, whichever is first. The cost is a scan
/// of the table (atomic loads, under the registry's lock) per connection accepted while it is full.
final class ConnectionRegistry: Sendable {
  private struct Entry {
    var channel: any Channel
    var activity: ConnectionActivity
  }
  private struct State {
    var open: [ObjectIdentifier: Entry] = [:]
    /// Connections told to close to make room, until they have closed; they no longer count
    /// toward the limit and are not chosen again.
    var evicted: Set<ObjectIdentifier> = []
    var accepting = true
  }
  private let state = NIOLockedValueBox(State())
  private let limit: Int
  private let metrics: NodeMetrics

  init(limit: Int, metrics: NodeMetrics) {
    precondition(limit > 0)
    self.limit = limit
    self.metrics = metrics
  }

  /// The connections open now, including any evicted ones still closing.
  var count: Int { state.withLockedValue { $0.open.count } }

  /// The connections open now.
  var open: [any Channel] { state.withLockedValue { $0.open.values.map(\.channel) } }

  /// Registers a new connection unless the server is shutting down, or at its limit with every
  /// connection busy; when at the limit otherwise, evicts the one longest waiting for its client.
  func admit(_ channel: any Channel, activity: ConnectionActivity) -> Bool {
    // The gauge is set under the lock so that concurrent changes reach it in order.
    let (admitted, victim) = state.withLockedValue { state -> (Bool, (any Channel)?) in
      guard state.accepting else { return (false, nil) }
      var victim: (any Channel)?
      if state.open.count - state.evicted.count >= limit {
        guard let (id, entry) = Self.longestWaiting(state) else { return (false, nil) }
        state.evicted.insert(id)
        victim = entry.channel
      }
      state.open[ObjectIdentifier(channel)] = Entry(channel: channel, activity: activity)
      metrics.openConnections.record(state.open.count)
      return (true, victim)
    }
    guard admitted else {
      metrics.refusedConnections.increment()
      return false
    }
    // Thread-safe: the event runs on the victim's own loop.
    victim?.pipeline.fireUserInboundEventTriggered(ConnectionEvictedEvent())
    channel.closeFuture.whenComplete { _ in
      self.state.withLockedValue { state in
        state.open.removeValue(forKey: ObjectIdentifier(channel))
        state.evicted.remove(ObjectIdentifier(channel))
        self.metrics.openConnections.record(state.open.count)
      }
    }
    return true
  }

  private static func longestWaiting(_ state: State) -> (ObjectIdentifier, Entry)? {
    var best: (id: ObjectIdentifier, entry: Entry, since: Int64)?
    for (id, entry) in state.open where !state.evicted.contains(id) {
      guard let since = entry.activity.waitingSinceNanoseconds else { continue }
      if best.map({ since < $0.since }) ?? true { best = (id, entry, since) }
    }
    return best.map { ($0.id, $0.entry) }
  }

  /// Refuses further connections.
  func stopAdmitting() { state.withLockedValue { $0.accepting = false } }
}
