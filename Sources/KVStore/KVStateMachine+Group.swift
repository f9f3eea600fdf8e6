import Raft
import RaftGroup

/// The key-value store as a Raft group's state machine.
extension KVStateMachine: ReplicatedStateMachine {
  public func apply(_ entry: LogEntry) -> KVApplyOutcome { apply(index: entry.index, data: entry.data) }

  public func advance(past entry: LogEntry) { advance(to: entry.index) }
}
