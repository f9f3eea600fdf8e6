import GRPCCore
import GRPCNIOTransportCore
import GRPCNIOTransportHTTP2
import Logging
import NIOCore
import NIOPosix
import RaftDBService

/// etcd's v3 gRPC API: on the HTTP port (`sharing:`, etcd's single client URL) or on a listener
/// of its own (`-gaddr`), with the services over the member's `KVService`.
public final class EtcdGRPCServer: Sendable {
  private let beginShutdown: @Sendable () -> Void
  private let serving: Task<Void, any Error>
  private let inlet: ConnectionInlet.Box?
  /// The port it listens on (the port chosen when 0 was asked for).
  public let port: Int

  private init(
    beginShutdown: @escaping @Sendable () -> Void, serving: Task<Void, any Error>,
    inlet: ConnectionInlet.Box?,
    port: Int
  ) {
    self.beginShutdown = beginShutdown
    self.serving = serving
    self.inlet = inlet
    self.port = port
  }

  /// What bounds a gRPC connection, after etcd's defaults where etcd has one.
  public struct Limits: Sendable {
    /// etcd's `--max-request-bytes`: larger requests are refused with ErrRequestTooLarge.
    public var maxRequestBytes: Int
    /// Streams open at once on one connection (etcd's `--max-concurrent-streams`; etcd allows 2^32).
    public var maxConcurrentStreams = 1024
    /// etcd's `--grpc-keepalive-min-time`: clients may ping this often, with or without calls (Go
    /// clients ping every 10 s, etcdctl every 2 s while a call is open).
    public var minPingInterval: Duration = .seconds(5)
    /// A connection with no call open this long is told to go away (it reconnects on its next call).
    public var maxIdleTime: Duration?

    public init(maxRequestBytes: Int, maxIdleTime: Duration? = nil) {
      self.maxRequestBytes = maxRequestBytes
      self.maxIdleTime = maxIdleTime
    }

    /// etcd lets gRPC read 512 KiB more than `--max-request-bytes`, so that a request just over the
    /// limit gets etcd's own error rather than gRPC's.
    static let grpcOverheadBytes = 512 << 10

    func apply(
      connection: inout HTTP2ServerTransport.Config.Connection,
      http2: inout HTTP2ServerTransport.Config.HTTP2,
      rpc: inout HTTP2ServerTransport.Config.RPC
    ) {
      connection.keepalive.clientBehavior = .init(
        minPingIntervalWithoutCalls: minPingInterval, allowWithoutCalls: true)
      connection.maxIdleTime = maxIdleTime
      http2.maxConcurrentStreams = maxConcurrentStreams
      rpc.maxRequestPayloadSize = maxRequestBytes + Self.grpcOverheadBytes
    }
  }

  /// Serves the connections the HTTP server on `sharedPort` hands over: install `acceptConnection`
  /// as its HTTP/2 handoff.
  public static func start(
    service: KVService, sharedPort port: Int, group: MultiThreadedEventLoopGroup, limits: Limits,
    logger: Logger
  ) async throws -> EtcdGRPCServer {
    let inlet = ConnectionInlet.Box()
    let services = EtcdServices(service: service, group: group, limits: limits)
    var config = HTTP2ServerTransport.Custom<SharedPortListener>.Config.defaults
    limits.apply(connection: &config.connection, http2: &config.http2, rpc: &config.rpc)
    let transport = HTTP2ServerTransport.Custom(
      listenerFactory: SharedPortListener(eventLoopGroup: group, inlet: inlet), config: config)
    let server = GRPCServer(transport: transport, services: services.all)
    let serving = Task { try await server.serve() }
    guard await transport.listeningAddress != nil else {
      serving.cancel()
      throw EtcdGRPCServerError.notListening("the HTTP port")
    }
    logger.info("etcd v3 gRPC API served on the HTTP port", metadata: ["port": "\(port)"])
    return EtcdGRPCServer(
      beginShutdown: {
        services.stop()
        server.beginGracefulShutdown()
      }, serving: serving, inlet: inlet, port: port)
  }

  /// Starts listening on `host:port` and returns once it does.
  public static func start(
    service: KVService, host: String, port: Int, group: MultiThreadedEventLoopGroup, limits: Limits,
    logger: Logger
  ) async throws -> EtcdGRPCServer {
    // The transport binds numeric addresses; "localhost" is the loopback, as for -haddr.
    let numeric = host == "localhost" ? "127.0.0.1" : host
    let address: GRPCNIOTransportCore.SocketAddress =
      numeric.contains(":") ? .ipv6(host: numeric, port: port) : .ipv4(host: numeric, port: port)
    let services = EtcdServices(service: service, group: group, limits: limits)
    let config = HTTP2ServerTransport.Posix.Config.defaults { config in
      limits.apply(connection: &config.connection, http2: &config.http2, rpc: &config.rpc)
    }
    let transport = HTTP2ServerTransport.Posix(
      address: address, transportSecurity: .plaintext, config: config, eventLoopGroup: group)
    let server = GRPCServer(transport: transport, services: services.all)
    let serving = Task { try await server.serve() }
    let listening: GRPCNIOTransportCore.SocketAddress
    do {
      listening = try await transport.listeningAddress
    } catch {
      serving.cancel()
      throw EtcdGRPCServerError.notListening("\(host):\(port): \(error)")
    }
    let boundPort = listening.ipv4?.port ?? listening.ipv6?.port ?? port
    logger.info("etcd v3 gRPC API listening", metadata: ["gaddr": "\(host):\(boundPort)"])
    return EtcdGRPCServer(
      beginShutdown: {
        services.stop()
        server.beginGracefulShutdown()
      }, serving: serving, inlet: nil, port: boundPort)
  }

  /// For the HTTP server's handoff: configures an HTTP/2 connection on the shared port as gRPC.
  public func acceptConnection(_ channel: any Channel) -> EventLoopFuture<Void> {
    guard let inlet else { return channel.eventLoop.makeFailedFuture(GRPCNotListening()) }
    return inlet.accept(channel)
  }

  /// Stops accepting calls and lets those in flight finish; after `gracePeriod` cancels what is
  /// still open (a stream the client keeps open would otherwise hold the process up forever).
  public func shutdown(gracePeriod: Duration = .seconds(10)) async {
    inlet?.close()
    beginShutdown()
    let serving = self.serving
    let deadline = Task {
      try await Task.sleep(for: gracePeriod)
      serving.cancel()
    }
    _ = try? await serving.value
    deadline.cancel()
  }
}

public enum EtcdGRPCServerError: Error, CustomStringConvertible {
  case notListening(String)

  public var description: String {
    switch self {
    case .notListening(let address): "the gRPC listener on \(address) did not start"
    }
  }
}

/// Every etcd service over one member, built once for either listener.
struct EtcdServices: Sendable {
  let watch: EtcdWatchService
  let lease: EtcdLeaseService
  let forwarder: LeaderForwarder
  /// The lock waits and election observers open now.
  let calls = OpenStreams<ClosableCall>()
  let all: [any RegistrableRPCService]

  init(service: KVService, group: any EventLoopGroup, limits: EtcdGRPCServer.Limits) {
    forwarder = LeaderForwarder(group: group)
    watch = EtcdWatchService(service: service, eventLoop: group.next(), limits: limits)
    lease = EtcdLeaseService(service: service, eventLoop: group.next(), forwarder: forwarder)
    let kv = EtcdKVService(
      service: service, eventLoop: group.next(), maxRequestBytes: limits.maxRequestBytes, forwarder: forwarder
    )
    let member = MemberClient(kv: kv, service: service, eventLoop: group.next())
    all = [
      kv, lease, watch,
      EtcdMaintenanceService(service: service, eventLoop: group.next()),
      EtcdClusterService(service: service, eventLoop: group.next(), forwarder: forwarder),
      EtcdLockService(member: member, calls: calls),
      EtcdElectionService(member: member, calls: calls),
      EtcdAuthService(service: service),
    ]
  }

  /// Ends every long-lived call (watch and keep-alive streams, lock waits, observers) and the
  /// forwarding clients: the server is stopping.
  func stop() {
    watch.streams.closeAll()
    lease.stop()
    calls.closeAll()
    forwarder.shutdown()
  }
}
