@_spi(Testing) import Raft
@_spi(Testing) import RaftGroup

/// One simulated server: the production `RaftGroup` (absent while crashed) over a simulated clock,
/// disk, network and snapshot store, plus what the checkers remember about it.
final class SimulatedNode {
  let id: NodeID
  let slot: Int
  /// This node's clock runs slightly fast or slow: ticks are `tickMicros` long.
  let tickMicros: UInt64
  var group: RaftGroup<SimulatedMachine>?
  /// Bumped at every crash so that events scheduled for an earlier life are ignored.
  var incarnation = 0
  var disk = SimulatedDisk()
  var pendingWrites: [PendingWrite] = []
  var lastWriteCompletion: UInt64 = 0
  /// How far this node's committed prefix has been checked.
  var commitChecked: UInt64 = 0
  /// While leading: where its log ended at the last check, to verify it only grows.
  var leaderWatermark: (term: UInt64, position: LogPosition)?

  init(id: NodeID, slot: Int, tickMicros: UInt64) {
    self.id = id
    self.slot = slot
    self.tickMicros = tickMicros
  }

  var isUp: Bool { group != nil }
  var raft: RaftNode? { group?.core }
  var appliedIndex: UInt64 { group?.machine.appliedIndex ?? 0 }
}

/// The simulated application's state machine: a hash chain of what it applied (`MachineState`).
/// Each application is reported to the simulation, which checks state machine safety.
final class SimulatedMachine: ReplicatedStateMachine {
  var state: MachineState
  let onApply: (LogEntry, MachineState) -> Void
  /// Reports an entry that does not follow the last one applied (which a correct runtime never
  /// hands over).
  let onGap: (LogEntry, UInt64) -> Void

  init(
    _ state: MachineState, onApply: @escaping (LogEntry, MachineState) -> Void,
    onGap: @escaping (LogEntry, UInt64) -> Void
  ) {
    self.state = state
    self.onApply = onApply
    self.onGap = onGap
  }

  var appliedIndex: UInt64 { state.appliedIndex }

  func apply(_ entry: LogEntry) { advance(past: entry) }

  func advance(past entry: LogEntry) {
    guard entry.index == state.appliedIndex + 1 else {
      onGap(entry, state.appliedIndex)
      return
    }
    state.apply(entry)
    onApply(entry, state)
  }
}

/// A received snapshot, staged until the group persists it.
final class SimulatedStagedSnapshot: StagedSnapshot {
  let metadata: SnapshotMetadata
  let machine: MachineState
  init(metadata: SnapshotMetadata, machine: MachineState) {
    self.metadata = metadata
    self.machine = machine
  }
  func abort() {}
}

/// The world one incarnation of a node runs in: its clock, thread, disk, network and snapshots, all
/// driven by the simulation's event queue. Work scheduled for a crashed incarnation never runs.
final class SimulatedWorld: GroupClock, GroupExecutor, GroupStorage, GroupMessageSink, GroupSnapshotStore {
  typealias Machine = SimulatedMachine
  unowned let simulation: ClusterSimulation
  let node: SimulatedNode
  let incarnation: Int

  init(simulation: ClusterSimulation, node: SimulatedNode) {
    self.simulation = simulation
    self.node = node
    incarnation = node.incarnation
  }

  /// This node's own clock, which drifts: a nominal tick lasts `node.tickMicros` simulated micros.
  var nowNanoseconds: UInt64 { simulation.now * 1000 * simulation.options.tickMicros / node.tickMicros }

  func execute(_ work: @escaping () -> Void) { execute(afterNanoseconds: 0, work) }

  func execute(afterNanoseconds nanoseconds: UInt64, _ work: @escaping () -> Void) {
    simulation.schedule(work, on: node, incarnation: incarnation, afterMicros: nanoseconds / 1000)
  }

  func persist(_ write: GroupWrite, completion: @escaping (Result<Void, GroupStorageFailure>) -> Void) {
    simulation.persist(write, on: node, completion: completion)
  }

  func send(_ messages: [Message]) {
    for message in messages { simulation.send(message, from: node) }
  }

  func sendSnapshot(_ message: Message, metadata: SnapshotMetadata) {
    simulation.sendSnapshot(message, metadata: metadata, from: node)
  }

  func save(
    _ machine: SimulatedMachine, at metadata: SnapshotMetadata,
    completion: @escaping (Result<Void, GroupStorageFailure>) -> Void
  ) {
    simulation.saveSnapshot(machine.state, at: metadata, on: node)
    // Serializing happens in the background in the server: finish on a later turn.
    execute { completion(.success(())) }
  }

  func load(
    _ metadata: SnapshotMetadata,
    completion: @escaping (Result<SimulatedMachine, GroupStorageFailure>) -> Void
  ) {
    simulation.loadSnapshot(metadata, on: node, incarnation: incarnation, completion: completion)
  }
}
