import NIOCore
import Raft
import RaftStorage

/// Limits and timings of the peer transport. Every queue and frame is bounded.
public struct TransportOptions: Sendable {
  /// Frames larger than this close the connection (the Raft core keeps appends far below it).
  public var maxFrameBytes = 64 << 20
  /// Messages waiting for a connection to a peer, by count and bytes; beyond these, new messages to
  /// that peer are dropped (Raft retransmits what matters).
  public var maxQueuedMessagesPerPeer = 4096
  public var maxQueuedBytesPerPeer = 64 << 20
  public var reconnectDelayMin: TimeAmount = .milliseconds(50)
  public var reconnectDelayMax: TimeAmount = .seconds(2)
  public var connectTimeout: TimeAmount = .seconds(2)
  public var snapshotChunkBytes = 1 << 20
  /// How long a snapshot sender waits for the receiver to confirm the whole snapshot arrived.
  public var snapshotAckTimeout: TimeAmount = .seconds(120)

  public init() {}
}

/// A snapshot received in full from the leader, not yet committed. Handed from the transport to the
/// node exactly once.
public final class ReceivedSnapshot: @unchecked Sendable {
  // Unchecked: the sink is written by one connection handler and then handed over, never shared;
  // the node commits or aborts it once.
  public let message: Message
  public let sink: any SnapshotSink

  init(message: Message, sink: any SnapshotSink) {
    self.message = message
    self.sink = sink
  }
}

/// What the transport tells the node. Methods are called on NIO event loops: hand work off, never block.
public protocol TransportDelegate: AnyObject, Sendable {
  /// Messages from peers, in arrival order per connection, batched per read.
  func transportReceived(_ messages: [Message])
  /// A connection to `peer` failed or broke: the node should stop pipelining to it.
  func transportPeerUnreachable(_ peer: NodeID)
  /// A snapshot stream to `peer` ended, confirmed or not.
  func transportSnapshotSent(to peer: NodeID, succeeded: Bool)
  /// A peer starts streaming a snapshot; return where to write it (or throw to refuse it).
  func transportBeginReceivingSnapshot(from peer: NodeID, metadata: SnapshotMetadata) throws
    -> any SnapshotSink
  /// The whole snapshot arrived. Step its message into the core, then commit or abort the sink.
  func transportReceivedSnapshot(_ snapshot: ReceivedSnapshot)
}
