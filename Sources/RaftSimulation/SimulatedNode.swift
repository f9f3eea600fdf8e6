@_spi(Testing) import Raft

/// One simulated server: a `RaftNode` (absent while crashed) plus the application around it — its
/// disk, its in-flight writes, its state machine, and the client requests it is serving.
final class SimulatedNode {
  let id: NodeID
  let slot: Int
  /// This node's clock runs slightly fast or slow: ticks are `tickMicros` long.
  let tickMicros: UInt64
  var raft: RaftNode?
  /// Bumped at every crash so that events scheduled for an earlier life are ignored.
  var incarnation = 0
  var disk = SimulatedDisk()
  var pendingWrites: [PendingWrite] = []
  var lastWriteCompletion: UInt64 = 0
  var machine = MachineState()
  /// The snapshot this node would send to a follower (matches its core's snapshot metadata).
  var snapshot: (metadata: SnapshotMetadata, machine: MachineState) = (.empty, MachineState())
  /// A snapshot received from the leader, waiting for the core to accept it.
  var stagedSnapshot: (metadata: SnapshotMetadata, machine: MachineState)?
  /// Proposals this node accepted, by index: the client is acknowledged when the entry at that
  /// index is applied with the same term.
  var proposals: [UInt64: UInt64] = [:]
  /// Reads this node is serving: request id to the commit index that was reached before it began.
  var reads: [UInt64: UInt64] = [:]
  /// How far this node's committed prefix has been checked.
  var commitChecked: UInt64 = 0
  /// While leading: where its log ended at the last check, to verify it only grows.
  var leaderWatermark: (term: UInt64, position: LogPosition)?

  init(id: NodeID, slot: Int, tickMicros: UInt64) {
    self.id = id
    self.slot = slot
    self.tickMicros = tickMicros
  }

  var isUp: Bool { raft != nil }
}
