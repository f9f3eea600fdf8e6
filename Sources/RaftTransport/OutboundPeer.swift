import Logging
import NIOCore
import NIOPosix
import Raft
import Synchronization

/// The connection from this node to one peer, which carries every message this node sends it.
/// Messages go out in one write and one flush per batch; while disconnected (or while the peer reads
/// too slowly) they wait in a bounded queue, and past its bound new ones are dropped. Failed
/// connections are retried with exponential back-off.
final class OutboundPeer: @unchecked Sendable {
  // Unchecked: every mutable property is touched only on `eventLoop` (each public entry point hops
  // there first), which serializes all access.
  let peer: NodeID
  let eventLoop: any EventLoop
  private let localID: NodeID
  private let options: TransportOptions
  private let logger: Logger
  private weak var transport: PeerTransport?
  private(set) var address: String
  private var channel: (any Channel)?
  private var connecting = false
  private var queue = CircularBuffer<Message>()
  private var queuedBytes = 0
  private var backoff: TimeAmount
  private var retry: Scheduled<Void>?
  private var closed = false
  /// Set when the peer refused our hello for naming another cluster or a group it does not run
  /// (`helloAnswer`): until a later hello of ours is accepted nothing is sent to it, and it is
  /// probed (a hello alone) only every `reconnectDelayMax`. A stale address that now leads into
  /// another cluster gets no messages there, and no stream of reconnections.
  private var refusedBy: (verdict: WireFormat.HelloVerdict, clusterID: UInt64)?
  /// Read from any thread (metrics), so atomic.
  private let dropped = Atomic<Int>(0)
  var droppedMessages: Int { dropped.load(ordering: .relaxed) }

  init(
    peer: NodeID, address: String, localID: NodeID, eventLoop: any EventLoop, options: TransportOptions,
    logger: Logger, transport: PeerTransport
  ) {
    self.peer = peer
    self.address = address
    self.localID = localID
    self.eventLoop = eventLoop
    self.options = options
    self.logger = logger
    self.transport = transport
    backoff = options.reconnectDelayMin
  }

  func send(_ messages: [Message]) {
    eventLoop.execute { self.enqueue(messages) }
  }

  func updateAddress(_ newAddress: String) {
    eventLoop.execute {
      guard newAddress != self.address else { return }
      self.address = newAddress
      self.channel?.close(promise: nil)
    }
  }

  func close() -> EventLoopFuture<Void> {
    eventLoop.submit {
      self.closed = true
      self.retry?.cancel()
      self.queue.removeAll()
      self.queuedBytes = 0
      return self.channel
    }.flatMap { channel in
      channel?.close() ?? self.eventLoop.makeSucceededVoidFuture()
    }.recover { _ in }
  }

  private func enqueue(_ messages: [Message]) {
    guard !closed else { return }
    if refusedBy != nil {
      dropped.add(messages.count, ordering: .relaxed)
      connectIfIdle()
      return
    }
    if let channel, channel.isWritable, queue.isEmpty {
      write(messages, to: channel)
      return
    }
    for message in messages {
      let size = message.approximateWireBytes
      guard queue.count < options.maxQueuedMessagesPerPeer,
        queuedBytes + size <= options.maxQueuedBytesPerPeer
      else {
        dropped.add(1, ordering: .relaxed)
        continue
      }
      queue.append(message)
      queuedBytes += size
    }
    if channel == nil { connectIfIdle() } else { flushQueue() }
  }

  private func write(_ messages: some Sequence<Message>, to channel: any Channel) {
    var buffer = channel.allocator.buffer(capacity: 256)
    for message in messages { buffer.writeMessageFrame(message) }
    channel.writeAndFlush(buffer, promise: nil)
  }

  /// Sends queued messages while the connection can take them.
  func flushQueue() {
    guard let channel, channel.isWritable, !queue.isEmpty, refusedBy == nil else { return }
    var buffer = channel.allocator.buffer(capacity: min(queuedBytes, 1 << 20))
    while let message = queue.popFirst() {
      queuedBytes -= message.approximateWireBytes
      buffer.writeMessageFrame(message)
      if buffer.readableBytes >= 1 << 20 {
        channel.write(buffer, promise: nil)
        buffer.clear()
      }
    }
    channel.writeAndFlush(buffer, promise: nil)
  }

  private func connectIfIdle() {
    guard !closed, channel == nil, !connecting, retry == nil else { return }
    guard let (host, port) = parseHostPort(address) else {
      logger.error("cannot connect to \(name): bad address \(address)")
      return
    }
    connecting = true
    let hello = WireFormat.Hello(
      version: WireFormat.protocolVersion, kind: .messages, from: localID, to: peer,
      advertisedAddress: transport?.advertisedAddress ?? "", clusterID: transport?.clusterID ?? 0)
    ClientBootstrap(group: eventLoop)
      .connectTimeout(options.connectTimeout)
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelOption(.socketOption(.so_keepalive), value: 1)
      .channelOption(.writeBufferWaterMark, value: .init(low: 1 << 20, high: 8 << 20))
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          let sync = channel.pipeline.syncOperations
          // A peer writes nothing here but its answer to the hello: two small frames at most.
          try sync.addHandler(ByteToMessageHandler(FrameDecoder(maxFrameBytes: 64, helloDecoded: true)))
          try sync.addHandler(OutboundConnectionHandler(owner: self))
        }
      }
      .connect(host: host, port: port)
      .whenComplete { result in
        self.connecting = false
        switch result {
        case .success(let channel):
          guard !self.closed else {
            channel.close(promise: nil)
            return
          }
          self.channel = channel
          // A refused peer is probed slowly until it accepts a hello (see `refusedBy`).
          if self.refusedBy == nil { self.backoff = self.options.reconnectDelayMin }
          var buffer = channel.allocator.buffer(capacity: 32)
          buffer.writeHello(hello)
          channel.write(buffer, promise: nil)
          self.logger.debug("connected to \(self.name) at \(self.address)")
          self.flushQueue()
          channel.flush()
          if self.refusedBy != nil { self.expectAnswer(on: channel) }
        case .failure(let error):
          self.logger.debug("connect to \(self.name) at \(self.address) failed: \(error)")
          self.connectionLost()
        }
      }
  }

  /// A probe that is neither refused nor answered within `reconnectDelayMax` was accepted by a
  /// peer of a build before hello answers (it never answers): sending resumes.
  private func expectAnswer(on channel: any Channel) {
    eventLoop.scheduleTask(in: options.reconnectDelayMax) {
      guard channel === self.channel, channel.isActive, self.refusedBy != nil else { return }
      self.answered(.accepted, clusterID: 0, on: channel)
    }
  }

  private var name: String { transport?.describe(peer) ?? "member \(peer.hex)" }

  /// The peer's answer to our hello, on `channel`.
  func answered(_ verdict: WireFormat.HelloVerdict, clusterID: UInt64, on channel: any Channel) {
    guard channel === self.channel else { return }
    switch verdict {
    case .accepted:
      guard let refusal = refusedBy else { return }
      refusedBy = nil
      backoff = options.reconnectDelayMin
      logger.notice(
        "\(name) at \(address) accepts this node again (it refused it: \(Self.describe(refusal)))")
      flushQueue()
    case .wrongCluster, .wrongGroup:
      let first = refusedBy == nil
      refusedBy = (verdict, clusterID)
      backoff = options.reconnectDelayMax
      queue.removeAll()
      queuedBytes = 0
      if first {
        let ours = transport?.clusterID ?? 0
        logger.warning(
          "\(name) at \(address) refused this node: \(Self.describe((verdict, clusterID))), this node's is \(ours == 0 ? "unknown" : HexID.format(ours)); sending it nothing until it accepts this node (probing every \(options.reconnectDelayMax))",
          metadata: ["peer": "\(name)", "address": "\(address)"])
      }
      channel.close(promise: nil)
    }
  }

  private static func describe(_ refusal: (verdict: WireFormat.HelloVerdict, clusterID: UInt64)) -> String {
    let cluster = refusal.clusterID == 0 ? "an unknown cluster" : "cluster \(HexID.format(refusal.clusterID))"
    return switch refusal.verdict {
    case .accepted: "accepted"
    case .wrongCluster: "it belongs to \(cluster)"
    case .wrongGroup: "it does not run this Raft group (it is in \(cluster))"
    }
  }

  /// Called when connecting failed or an established connection closed.
  func connectionLost() {
    channel = nil
    transport?.reportUnreachable(peer)
    guard !closed else { return }
    // Messages queued for a dead connection are stale by the time it returns; Raft resends.
    queue.removeAll()
    queuedBytes = 0
    let delay = backoff
    backoff = min(backoff * 2, options.reconnectDelayMax)
    retry = eventLoop.scheduleTask(in: delay) {
      self.retry = nil
      self.connectIfIdle()
    }
  }
}

/// Watches the outbound connection: resumes sending when the socket drains, notices closes, and
/// hands the peer's answer to the hello to its owner.
private final class OutboundConnectionHandler: ChannelInboundHandler {
  typealias InboundIn = Frame
  private let owner: OutboundPeer

  init(owner: OutboundPeer) { self.owner = owner }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    if context.channel.isWritable { owner.flushQueue() }
    context.fireChannelWritabilityChanged()
  }

  func channelInactive(context: ChannelHandlerContext) {
    owner.connectionLost()
    context.fireChannelInactive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    guard case .helloAnswer(let verdict, let clusterID) = unwrapInboundIn(data) else {
      context.close(promise: nil)  // Nothing else is ever written on this connection.
      return
    }
    owner.answered(verdict, clusterID: clusterID, on: context.channel)
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    context.close(promise: nil)
  }
}

/// Splits "host:port" (and "[v6]:port").
func parseHostPort(_ address: String) -> (String, Int)? {
  guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
    (1...65535).contains(port)
  else { return nil }
  var host = String(address[..<colon])
  if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
  guard !host.isEmpty else { return nil }
  return (host, port)
}

extension Message {
  /// Bytes this message takes on the wire, near enough for queue bounds.
  var approximateWireBytes: Int {
    if case .appendEntries(let append) = body {
      return 64 + append.entries.reduce(0) { $0 + 13 + $1.data.count }
    }
    return 64
  }
}
