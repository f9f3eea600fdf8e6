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

  // Inbound limits (docs/SECURITY.md lists each with its flag and what a refusal logs and counts).
  /// Inbound peer connections open at once; more are closed as they arrive. Each member opens
  /// one message stream to each other member plus one per snapshot in flight.
  public var maxInboundConnections = 256
  /// Bytes held in partial frames across all inbound connections.
  public var maxBufferedInboundBytes = 256 << 20
  /// An inbound connection must send its hello within this.
  public var helloTimeout: TimeAmount = .seconds(5)
  /// Each frame must arrive complete within this of its first byte (a 64 MiB frame at 10 MB/s
  /// takes under 7 s).
  public var frameTimeout: TimeAmount = .seconds(30)
  /// An inbound connection that delivers nothing for this long is closed (a leader's heartbeats and
  /// a follower's answers arrive many times a second; a peer reconnects when it has more to say).
  public var idleTimeout: TimeAmount = .seconds(60)
  /// How often each inbound connection's deadlines are checked.
  public var connectionCheckInterval: TimeAmount = .seconds(1)
  /// The largest snapshot a node accepts from its leader.
  public var maxSnapshotBytes: UInt64 = 64 << 30
  /// Addresses learned from hellos of admitted peers outside the configuration (the leader of a
  /// node that is joining), at most this many; forgotten when the peer stops being admitted.
  public var maxLearnedAddresses = 8

  public init() {}
}

/// Who this node accepts peer connections from, published by the node whenever its configuration
/// or leader changes and read by the transport on its event loops.
public struct PeerAdmission: Sendable, Equatable {
  /// Members of the newest configuration.
  public var members: Set<NodeID> = []
  /// Peers outside the configuration that the core accepts now (`trustedPeersOutsideConfiguration`:
  /// the members a joining node was told of, a leader a member vouched for).
  public var trusted: Set<NodeID> = []
  /// Take hellos from anyone. Only for tests of the transport alone: a node never sets it.
  public var admitsStrangers = true
  /// This node's cluster, or 0 while it knows none (a data directory from before cluster ids). A
  /// hello naming another cluster is refused (`wrongCluster`) when both sides know theirs; outbound
  /// hellos carry it.
  public var clusterID: UInt64 = 0
  public var term: UInt64 = 0
  public var leader: NodeID?

  public init() {}

  func admits(_ peer: NodeID) -> Bool { admitsStrangers || members.contains(peer) || trusted.contains(peer) }

  /// A snapshot may come from this term's leader, or from an admitted peer in a newer term (a
  /// leader this node has not heard of yet).
  func admitsSnapshot(from peer: NodeID, term messageTerm: UInt64) -> Bool {
    if admitsStrangers { return true }
    if messageTerm == term, peer == leader { return true }
    return messageTerm > term && admits(peer)
  }
}

/// A peer connection the transport closed or refused, for the node to count and log.
public struct TransportRefusal: Sendable {
  public enum Reason: String, Sendable, CaseIterable {
    case tooManyConnections = "too_many_connections"
    case helloTimeout = "hello_timeout"
    case frameTimeout = "frame_timeout"
    case idleTimeout = "idle_timeout"
    case bufferBudget = "buffer_budget"
    case malformed = "malformed"
    case unknownPeer = "unknown_peer"
    case wrongCluster = "wrong_cluster"
    case wrongGroup = "wrong_group"
    case snapshotNotFromLeader = "snapshot_not_from_leader"
    case snapshotTooLarge = "snapshot_too_large"
    case snapshotInProgress = "snapshot_in_progress"
    case evictedBeforeHello = "evicted_before_hello"
    case acceptFailed = "accept_failed"
  }

  public var reason: Reason
  public var remote: String
  public var detail: String

  public init(reason: Reason, remote: String, detail: String) {
    self.reason = reason
    self.remote = remote
    self.detail = detail
  }
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
  /// Whether a snapshot of `bytes` fits on this node's disk with room to spare.
  func transportHasSpace(forSnapshotBytes bytes: UInt64) -> Bool
  /// A connection was closed or refused at the boundary (count it, log it rate-limited). An
  /// `acceptFailed` refusal means the listener could not accept (out of file descriptors).
  func transportRefused(_ refusal: TransportRefusal)
}
