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
    /// The installSnapshot message arrived and was admitted; the size comes next.
    case snapshotAnnounced(from: NodeID, message: Message, metadata: SnapshotMetadata)
    case snapshotData(
      from: NodeID, message: Message, sink: any SnapshotSink, expected: UInt64, received: UInt64)
    case done
  }

  private let localID: NodeID
  private let delegate: any TransportDelegate
  private let logger: Logger
  private let options: TransportOptions
  private let progress: InboundConnectionProgress
  /// Who may connect, as the node last published it.
  private let admission: @Sendable () -> PeerAdmission
  private let learnAddress: @Sendable (NodeID, String) -> Void
  /// Names a peer for refusal details (its member name when the node knows it).
  private let describe: @Sendable (NodeID) -> String
  /// Inbound snapshot streams in progress, across connections (at most one).
  private let snapshotSlot: SnapshotSlot
  private var holdsSnapshotSlot = false
  /// Tells the connection table this connection introduced itself (it can no longer be evicted).
  private let onHello: () -> Void
  private var state = State.awaitingHello
  private var batch: [Message] = []

  init(
    localID: NodeID, delegate: any TransportDelegate, logger: Logger,
    options: TransportOptions = TransportOptions(),
    progress: InboundConnectionProgress = InboundConnectionProgress(),
    admission: @escaping @Sendable () -> PeerAdmission = { PeerAdmission() },
    snapshotSlot: SnapshotSlot = SnapshotSlot(), onHello: @escaping () -> Void = {},
    learnAddress: @escaping @Sendable (NodeID, String) -> Void = { _, _ in },
    describe: @escaping @Sendable (NodeID) -> String = { "member \($0.hex)" }
  ) {
    self.describe = describe
    self.snapshotSlot = snapshotSlot
    self.onHello = onHello
    self.localID = localID
    self.delegate = delegate
    self.logger = logger
    self.options = options
    self.progress = progress
    self.admission = admission
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
      let admission = admission()
      // First, before the ids: in another cluster the ids mean other members (or none), and the
      // operator needs to hear that a stale address leads to another cluster.
      if admission.clusterID != 0, hello.clusterID != 0, hello.clusterID != admission.clusterID {
        throw PeerRefusal(
          reason: .wrongCluster,
          detail:
            "\(describe(hello.from)) (advertising \(hello.advertisedAddress)) belongs to cluster \(HexID.format(hello.clusterID)), this node to cluster \(HexID.format(admission.clusterID))",
          answer: .wrongCluster)
      }
      guard hello.to == localID else {
        throw WireError.malformed(
          "connection for \(describe(hello.to)) reached \(describe(localID)) (stale address?)")
      }
      guard hello.from != localID else {
        throw PeerRefusal(reason: .unknownPeer, detail: "hello claims this node's own id")
      }
      guard admission.admits(hello.from) else {
        throw PeerRefusal(
          reason: .unknownPeer, detail: "\(describe(hello.from)) is not a member of this node's configuration"
        )
      }
      if !hello.advertisedAddress.isEmpty, !admission.members.contains(hello.from) {
        learnAddress(hello.from, hello.advertisedAddress)
      }
      progress.helloAccepted = true
      onHello()
      if hello.kind == .messages {
        // Only message streams hear an acceptance: a sender of a build before the answer reads
        // frames on a snapshot stream and would take it for a protocol error.
        answer(context: context, .accepted, clusterID: admission.clusterID)
        state = .messages(from: hello.from)
      } else {
        state = .snapshotHeader(from: hello.from)
      }
    case (.messages(let from), .message(let message)):
      guard message.from == from, message.to == localID else {
        throw WireError.malformed(
          "message \(describe(message.from))->\(describe(message.to)) on a stream from \(describe(from))")
      }
      // A snapshot's message travels only on a snapshot stream, with the data it describes; here it
      // would make the core accept a snapshot this node does not hold.
      if case .installSnapshot = message.body {
        throw WireError.malformed("installSnapshot on a message stream")
      }
      batch.append(message)
    case (.snapshotHeader(let from), .message(let message)):
      guard case .installSnapshot(let metadata) = message.body, message.from == from, message.to == localID
      else {
        throw WireError.malformed("snapshot stream must start with an installSnapshot message")
      }
      guard admission().admitsSnapshot(from: from, term: message.term) else {
        throw PeerRefusal(
          reason: .snapshotNotFromLeader,
          detail: "snapshot \(metadata.index) offered by \(describe(from)), not the leader")
      }
      // One snapshot at a time: the free-space check below is then exact, and a node cannot be
      // made to hold several streams' worth of files.
      guard snapshotSlot.acquire() else {
        throw PeerRefusal(
          reason: .snapshotInProgress,
          detail: "snapshot \(metadata.index) offered by \(describe(from)) while another arrives")
      }
      holdsSnapshotSlot = true
      state = .snapshotAnnounced(from: from, message: message, metadata: metadata)
    case (.snapshotAnnounced(let from, let message, let metadata), .snapshotBegin(_, let size)):
      guard size <= options.maxSnapshotBytes else {
        throw PeerRefusal(
          reason: .snapshotTooLarge,
          detail: "snapshot of \(size) bytes exceeds the \(options.maxSnapshotBytes)-byte limit")
      }
      guard delegate.transportHasSpace(forSnapshotBytes: size) else {
        throw PeerRefusal(
          reason: .snapshotTooLarge,
          detail: "no room on disk for a snapshot of \(size) bytes (with the reserve)")
      }
      // Only now, with the sender and the size accepted, is a file created.
      state = .done  // Until the sink exists.
      let sink = try delegate.transportBeginReceivingSnapshot(from: from, metadata: metadata)
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
      releaseSnapshotSlot()
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
      logger.warning("snapshot stream from \(describe(from)) broke off; discarding it")
      sink.abort()
    }
    state = .done
    releaseSnapshotSlot()
    context.fireChannelInactive()
  }

  private func releaseSnapshotSlot() {
    guard holdsSnapshotSlot else { return }
    holdsSnapshotSlot = false
    snapshotSlot.release()
  }

  /// Closes the connection and reports why (the node counts it and logs it, rate-limited: a
  /// stranger's flood must not become a flood of log lines).
  private func refuse(context: ChannelHandlerContext, _ error: any Error) {
    if case .snapshotData(_, _, let sink, _, _) = state { sink.abort() }
    let beforeHello = if case .awaitingHello = state { true } else { false }
    state = .done
    releaseSnapshotSlot()
    // A connection already closed (by a deadline, or by the peer) has nothing more worth reporting.
    guard !didRefuse, context.channel.isActive else { return }
    didRefuse = true
    let remote = context.remoteAddress.map { "\($0)" } ?? "?"
    let refusal: TransportRefusal
    var verdict: WireFormat.HelloVerdict?
    switch error {
    case let peer as PeerRefusal:
      refusal = TransportRefusal(reason: peer.reason, remote: remote, detail: peer.detail)
      verdict = peer.answer
    case WireError.bufferBudgetExhausted:
      refusal = TransportRefusal(reason: .bufferBudget, remote: remote, detail: "\(error)")
    case WireError.unknownGroup:
      refusal = TransportRefusal(reason: .wrongGroup, remote: remote, detail: "\(error)")
      verdict = .wrongGroup
    default:
      refusal = TransportRefusal(reason: .malformed, remote: remote, detail: "\(error)")
    }
    delegate.transportRefused(refusal)
    // Tell a sender of another cluster or group why, so that it stops sending here (it ignores
    // anything else; messages it wrote after its hello are discarded unread with the connection).
    if beforeHello, let verdict { answer(context: context, verdict, clusterID: admission().clusterID) }
    context.close(promise: nil)
  }

  private func answer(context: ChannelHandlerContext, _ verdict: WireFormat.HelloVerdict, clusterID: UInt64) {
    var buffer = context.channel.allocator.buffer(capacity: 16)
    buffer.writeHelloAnswer(verdict, clusterID: clusterID)
    context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
  }

  private var didRefuse = false
}

/// A refusal decided by the connection handler (rather than a decoding error).
struct PeerRefusal: Error, CustomStringConvertible {
  var reason: TransportRefusal.Reason
  var detail: String
  /// What the sender is told before the connection closes (nothing, for most refusals).
  var answer: WireFormat.HelloVerdict? = nil
  var description: String { detail }
}
