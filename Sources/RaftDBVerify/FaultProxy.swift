import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RaftTransport

/// A directed link between two nodes, by their Raft node ids.
public struct Link: Hashable, Sendable, CustomStringConvertible {
  public var from: UInt64
  public var to: UInt64
  public init(from: UInt64, to: UInt64) {
    self.from = from
    self.to = to
  }
  public var description: String { "\(from)->\(to)" }
}

/// A TCP proxy in front of every node's raft port: peers are told the proxy's address, and the proxy
/// forwards to the node. raftdb's peer connections each carry one direction (the dialer's messages), and
/// begin with a hello naming both ends, so the proxy knows which directed link each connection is and
/// can cut any set of links — a partition, one-way loss, a bridge — with no hook in raftdb itself.
public final class FaultProxy: Sendable {
  private let group: any EventLoopGroup
  private let listeners = NIOLockedValueBox<[any Channel]>([])
  private let state = NIOLockedValueBox(State())

  struct State {
    var blocked: Set<Link> = []
    /// Live forwarded connections by link, so that cutting a link closes them.
    var connections: [Link: [ObjectIdentifier: any Channel]] = [:]
  }

  public init(group: any EventLoopGroup) { self.group = group }

  /// Listens on `listenPort` and forwards to `upstreamPort` (both on 127.0.0.1).
  public func addRoute(listenPort: Int, upstreamPort: Int) async throws {
    let proxy = self
    let group = self.group
    let channel = try await ServerBootstrap(group: group)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
      .childChannelOption(.autoRead, value: true)
      .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(
            HelloSniffer(proxy: proxy, upstreamPort: upstreamPort, group: group))
        }
      }
      .bind(host: "127.0.0.1", port: listenPort)
      .get()
    listeners.withLockedValue { $0.append(channel) }
  }

  /// Cuts exactly these links (closing their live connections) and restores all others.
  public func setBlocked(_ links: Set<Link>) {
    let toClose: [any Channel] = state.withLockedValue { state in
      state.blocked = links
      return links.flatMap { state.connections[$0].map { Array($0.values) } ?? [] }
    }
    for channel in toClose { channel.close(promise: nil) }
  }

  public var blocked: Set<Link> { state.withLockedValue { $0.blocked } }

  func isBlocked(_ link: Link) -> Bool { state.withLockedValue { $0.blocked.contains(link) } }

  func register(_ channel: any Channel, link: Link) -> Bool {
    state.withLockedValue { state in
      guard !state.blocked.contains(link) else { return false }
      state.connections[link, default: [:]][ObjectIdentifier(channel)] = channel
      return true
    }
  }

  func unregister(_ channel: any Channel, link: Link) {
    state.withLockedValue { _ = $0.connections[link]?.removeValue(forKey: ObjectIdentifier(channel)) }
  }

  public func shutdown() async {
    let all = listeners.withLockedValue { listeners in
      defer { listeners = [] }
      return listeners
    }
    for channel in all { try? await channel.close() }
    setBlocked(Set(state.withLockedValue { Array($0.connections.keys) }))
  }
}

/// Reads the first frame of a peer connection (the hello, decoded as the receiving node decodes it),
/// decides whether the link is open, then connects upstream and glues the two connections together.
private final class HelloSniffer: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  private let proxy: FaultProxy
  private let upstreamPort: Int
  private let group: any EventLoopGroup
  private var buffered: ByteBuffer?

  init(proxy: FaultProxy, upstreamPort: Int, group: any EventLoopGroup) {
    self.proxy = proxy
    self.upstreamPort = upstreamPort
    self.group = group
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    var incoming = unwrapInboundIn(data)
    if buffered == nil {
      buffered = incoming
    } else {
      buffered!.writeBuffer(&incoming)
    }
    guard let bytes = buffered else { return }
    let hello: WireFormat.Hello
    switch WireFormat.leadingHello(bytes) {
    case .incomplete: return
    case .invalid:
      context.close(promise: nil)
      return
    case .hello(let decoded): hello = decoded
    }
    context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
    let link = Link(from: hello.from.rawValue, to: hello.to.rawValue)
    guard !proxy.isBlocked(link) else {
      context.close(promise: nil)
      return
    }
    let inbound = context.channel
    let proxy = self.proxy
    let pending = bytes
    buffered = nil
    ClientBootstrap(group: inbound.eventLoop)
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .connect(host: "127.0.0.1", port: upstreamPort)
      .whenComplete { result in
        switch result {
        case .failure:
          inbound.close(promise: nil)
        case .success(let outbound):
          guard proxy.register(inbound, link: link), proxy.register(outbound, link: link) else {
            inbound.close(promise: nil)
            outbound.close(promise: nil)
            return
          }
          let (toUpstream, toDownstream) = GlueHandler.pair()
          do {
            try inbound.pipeline.syncOperations.addHandler(toUpstream)
            try outbound.pipeline.syncOperations.addHandler(toDownstream)
            let sniffer = try inbound.pipeline.syncOperations.context(handlerType: HelloSniffer.self)
            inbound.pipeline.syncOperations.removeHandler(context: sniffer, promise: nil)
          } catch {
            inbound.close(promise: nil)
            outbound.close(promise: nil)
            return
          }
          outbound.writeAndFlush(pending, promise: nil)
          inbound.closeFuture.whenComplete { _ in
            proxy.unregister(inbound, link: link)
            outbound.close(promise: nil)
          }
          outbound.closeFuture.whenComplete { _ in
            proxy.unregister(outbound, link: link)
            inbound.close(promise: nil)
          }
          inbound.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
          inbound.read()
        }
      }
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    context.close(promise: nil)
  }
}

/// Forwards bytes to a partner channel, pausing reads while the partner cannot take more.
private final class GlueHandler: ChannelDuplexHandler {
  typealias InboundIn = ByteBuffer
  typealias OutboundIn = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private var partner: GlueHandler?
  private var context: ChannelHandlerContext?
  private var pendingRead = false

  static func pair() -> (GlueHandler, GlueHandler) {
    let first = GlueHandler()
    let second = GlueHandler()
    first.partner = second
    second.partner = first
    return (first, second)
  }

  func handlerAdded(context: ChannelHandlerContext) { self.context = context }

  func handlerRemoved(context: ChannelHandlerContext) {
    self.context = nil
    partner = nil
  }

  private func partnerWrite(_ data: NIOAny) { context?.write(data, promise: nil) }

  private func partnerFlush() { context?.flush() }

  private var partnerWritable: Bool { context?.channel.isWritable ?? false }

  private func partnerBecameWritable() {
    if pendingRead {
      pendingRead = false
      context?.read()
    }
  }

  // Both channels of a pair live on the same event loop (the upstream connection is made on the
  // inbound one's), so the partner is called directly.
  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    partner?.partnerWrite(data)
  }

  func channelReadComplete(context: ChannelHandlerContext) {
    partner?.partnerFlush()
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    if context.channel.isWritable { partner?.partnerBecameWritable() }
  }

  func read(context: ChannelHandlerContext) {
    if let partner, partner.partnerWritable || partner.context == nil {
      context.read()
    } else {
      pendingRead = true
    }
  }
}
