import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Raft
import RaftStorage

/// Raft's network: listens on the raft address for peers' connections and keeps one outbound
/// connection to each peer. Thread-safe; `send` can be called from anywhere and never blocks.
public final class PeerTransport: Sendable {
  public let localID: NodeID
  let group: any EventLoopGroup
  let options: TransportOptions
  let logger: Logger
  let delegate: any TransportDelegate
  /// Where this node listens, told to every peer it connects to.
  public let advertisedAddress: String
  private let peers = NIOLockedValueBox<[NodeID: OutboundPeer]>([:])
  /// Addresses peers advertised when they connected; used to answer a peer that the configuration
  /// does not list yet (this node is joining, or the peer was just added).
  private let learnedAddresses = NIOLockedValueBox<[NodeID: String]>([:])
  private let listener = NIOLockedValueBox<(any Channel)?>(nil)
  private let admission = NIOLockedValueBox(PeerAdmission())
  /// Members' names, for log lines and refusal details (the node sets them with the configuration).
  private let names = NIOLockedValueBox<[NodeID: String]>([:])
  private let inboundConnections: InboundConnections
  private let snapshotSlot = SnapshotSlot()
  let bufferBudget: PeerBufferBudget

  public init(
    localID: NodeID, advertisedAddress: String = "", group: any EventLoopGroup,
    options: TransportOptions = TransportOptions(), logger: Logger, delegate: any TransportDelegate
  ) {
    self.localID = localID
    self.advertisedAddress = advertisedAddress
    self.group = group
    self.options = options
    self.logger = logger
    self.delegate = delegate
    bufferBudget = PeerBufferBudget(limitBytes: options.maxBufferedInboundBytes)
    inboundConnections = InboundConnections(limit: options.maxInboundConnections)
  }

  /// Who may connect (see `PeerAdmission`). Addresses learned from peers no longer admitted are
  /// forgotten, and peers dialled only because of them are closed by the next `setPeers`.
  public func updateAdmission(_ new: PeerAdmission) {
    let changed = admission.withLockedValue { current in
      defer { current = new }
      return current != new
    }
    if changed && !new.admitsStrangers {
      learnedAddresses.withLockedValue { learned in
        learned = learned.filter { new.trusted.contains($0.key) && !new.members.contains($0.key) }
      }
    }
  }

  /// This node's cluster as last published (0: unknown), which every outbound hello carries.
  var clusterID: UInt64 { admission.withLockedValue { $0.clusterID } }

  /// How log lines and refusal details name a peer: its name if the node told us one, else its id.
  func describe(_ peer: NodeID) -> String { Self.describe(peer, names: names) }

  static func describe(_ peer: NodeID, names: NIOLockedValueBox<[NodeID: String]>) -> String {
    names.withLockedValue { $0[peer] } ?? "member \(peer.hex)"
  }

  /// Replaces the names (the configuration's, and while joining the seed's).
  public func setNames(_ new: [NodeID: String]) {
    names.withLockedValue { $0 = new }
  }

  /// Addresses learned from strangers' hellos (for tests and metrics).
  var learnedAddressCount: Int { learnedAddresses.withLockedValue { $0.count } }

  /// Inbound peer connections that have sent their hello (for tests).
  var introducedInboundConnectionCount: Int { inboundConnections.introducedCount }

  /// Inbound peer connections open now.
  public var inboundConnectionCount: Int { inboundConnections.count }

  /// Starts listening; returns the bound address (useful with port 0).
  @discardableResult
  public func listen(host: String, port: Int) async throws -> SocketAddress {
    let localID = localID
    let delegate = delegate
    let logger = logger
    let maxFrameBytes = options.maxFrameBytes
    let options = options
    let learned = learnedAddresses
    let maxLearned = options.maxLearnedAddresses
    let learnAddress: @Sendable (NodeID, String) -> Void = { peer, address in
      learned.withLockedValue { addresses in
        guard addresses[peer] != nil || addresses.count < maxLearned else { return }
        addresses[peer] = address
      }
    }
    let admission = self.admission
    let readAdmission: @Sendable () -> PeerAdmission = { admission.withLockedValue { $0 } }
    let names = self.names
    let describe: @Sendable (NodeID) -> String = { Self.describe($0, names: names) }
    let inbound = inboundConnections
    let slot = snapshotSlot
    let budget = bufferBudget
    let maxInbound = options.maxInboundConnections
    let channel = try await ServerBootstrap(group: group)
      .serverChannelOption(.backlog, value: 256)
      .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
      .serverChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          // NIO's back-off pauses accepting for a moment after EMFILE and the like (the socket
          // would otherwise stay readable and spin the loop); it passes the error on to ours.
          try channel.pipeline.syncOperations.addHandler(AcceptBackoffHandler())
          try channel.pipeline.syncOperations.addHandler(AcceptFailureHandler(delegate: delegate))
        }
      }
      .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
      .childChannelOption(.maxMessagesPerRead, value: 16)
      .childChannelInitializer { channel in
        let remote = channel.remoteAddress.map { "\($0)" } ?? "?"
        let hello = HelloFlag()
        switch inbound.admit(channel, hello: hello) {
        case .admitted:
          break
        case .admittedEvicting(let evicted):
          delegate.transportRefused(
            TransportRefusal(
              reason: .evictedBeforeHello, remote: evicted.remoteAddress.map { "\($0)" } ?? "?",
              detail:
                "closed a connection without a hello to make room (\(maxInbound) inbound peer connections open)"
            ))
          evicted.close(promise: nil)
        case .refused:
          delegate.transportRefused(
            TransportRefusal(
              reason: .tooManyConnections, remote: remote,
              detail: "already \(maxInbound) inbound peer connections open, each past its hello"))
          return channel.eventLoop.makeFailedFuture(TooManyPeerConnections())
        }
        channel.closeFuture.whenComplete { _ in inbound.remove(channel) }
        return channel.eventLoop.makeCompletedFuture {
          let progress = InboundConnectionProgress()
          let sync = channel.pipeline.syncOperations
          try sync.addHandler(
            PeerConnectionGuard(progress: progress, options: options, budget: budget) { reason, detail in
              delegate.transportRefused(TransportRefusal(reason: reason, remote: remote, detail: detail))
            })
          try sync.addHandler(
            ByteToMessageHandler(
              FrameDecoder(maxFrameBytes: maxFrameBytes, progress: progress, budget: budget)))
          try sync.addHandler(
            InboundConnectionHandler(
              localID: localID, delegate: delegate, logger: logger, options: options, progress: progress,
              admission: readAdmission, snapshotSlot: slot, onHello: { hello.set() },
              learnAddress: learnAddress, describe: describe))
        }
      }
      .bind(host: host, port: port)
      .get()
    listener.withLockedValue { $0 = channel }
    return channel.localAddress!
  }

  /// Sets where each peer listens (from the newest configuration). Peers no longer listed are
  /// disconnected; changed addresses reconnect.
  public func setPeers(_ addresses: [NodeID: String]) {
    let removed: [OutboundPeer] = peers.withLockedValue { peers in
      var removed: [OutboundPeer] = []
      for (id, peer) in peers where addresses[id] == nil {
        removed.append(peer)
        peers[id] = nil
      }
      for (id, address) in addresses where id != localID {
        if let existing = peers[id] {
          existing.updateAddress(address)
        } else {
          peers[id] = OutboundPeer(
            peer: id, address: address, localID: localID, eventLoop: group.next(), options: options,
            logger: logger, transport: self)
        }
      }
      return removed
    }
    for peer in removed { _ = peer.close() }
  }

  /// Sends messages, grouped into one write per peer. Messages to a peer neither the configuration
  /// nor a connection told us the address of are dropped.
  public func send(_ messages: [Message]) {
    guard !messages.isEmpty else { return }
    var targets = peers.withLockedValue { $0 }
    for message in messages where targets[message.to] == nil {
      if let peer = peerFromLearnedAddress(message.to) { targets[message.to] = peer }
    }
    if messages.count == 1 || messages.allSatisfy({ $0.to == messages[0].to }) {
      targets[messages[0].to]?.send(messages)
      return
    }
    var byPeer: [NodeID: [Message]] = [:]
    for message in messages { byPeer[message.to, default: []].append(message) }
    for (peer, batch) in byPeer { targets[peer]?.send(batch) }
  }

  /// Messages dropped so far because a peer's queue was full.
  public var droppedMessages: Int {
    peers.withLockedValue { $0.values.reduce(0) { $0 + $1.droppedMessages } }
  }

  private func peerFromLearnedAddress(_ id: NodeID) -> OutboundPeer? {
    guard let address = learnedAddresses.withLockedValue({ $0[id] }) else { return nil }
    return peers.withLockedValue { peers in
      if let existing = peers[id] { return existing }
      let peer = OutboundPeer(
        peer: id, address: address, localID: localID, eventLoop: group.next(), options: options,
        logger: logger,
        transport: self)
      peers[id] = peer
      return peer
    }
  }

  /// Peers the transport keeps a connection to (configured, or learned while joining).
  public var outboundPeerCount: Int { peers.withLockedValue { $0.count } }

  func reportUnreachable(_ peer: NodeID) {
    delegate.transportPeerUnreachable(peer)
  }

  /// Streams a snapshot to the peer named in `message` (an installSnapshot) on a connection of its
  /// own, so that heartbeats keep flowing meanwhile. The outcome is reported to the delegate.
  public func sendSnapshot(_ message: Message, source: any SnapshotSource) {
    let peer = message.to
    guard
      let address = peers.withLockedValue({ $0[peer]?.address })
        ?? learnedAddresses.withLockedValue({ $0[peer] })
    else {
      source.close()
      delegate.transportSnapshotSent(to: peer, succeeded: false)
      return
    }
    let box = SnapshotSourceBox(source)
    Task {
      let succeeded: Bool
      do {
        try await SnapshotSender(transport: self, message: message, address: address, source: box.source)
          .run()
        succeeded = true
      } catch {
        logger.warning(
          "sending snapshot \(box.source.metadata.index) to \(self.describe(peer)) failed: \(error)")
        succeeded = false
      }
      box.source.close()
      delegate.transportSnapshotSent(to: peer, succeeded: succeeded)
    }
  }

  /// Closes the listener and every connection.
  public func shutdown() async {
    let channel = listener.withLockedValue { channel in
      defer { channel = nil }
      return channel
    }
    try? await channel?.close()
    let all = peers.withLockedValue { peers in
      defer { peers = [:] }
      return Array(peers.values)
    }
    for peer in all { try? await peer.close().get() }
  }
}

struct TooManyPeerConnections: Error {}

/// Reports a listener that cannot accept (out of file descriptors, most often): NIO backs off and
/// retries by itself, but the node must know, since a leader that cannot take connections should
/// not keep the cluster waiting on it.
private final class AcceptFailureHandler: ChannelInboundHandler {
  typealias InboundIn = any Channel
  let delegate: any TransportDelegate

  init(delegate: any TransportDelegate) { self.delegate = delegate }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) { context.fireChannelRead(data) }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    delegate.transportRefused(
      TransportRefusal(reason: .acceptFailed, remote: "", detail: "cannot accept peer connections: \(error)"))
  }
}

/// Carries a snapshot source into the sending task.
private final class SnapshotSourceBox: @unchecked Sendable {
  // Unchecked: the source is handed to exactly one task and used only there.
  let source: any SnapshotSource
  init(_ source: any SnapshotSource) { self.source = source }
}
