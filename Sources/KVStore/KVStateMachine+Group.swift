import Raft
import RaftGroup

/// The key-value store as a Raft group's state machine.
extension KVStateMachine: ReplicatedStateMachine {
  public func apply(_ entry: LogEntry) -> KVApplyOutcome { apply(index: entry.index, data: entry.data) }

  public func advance(past entry: LogEntry) { advance(to: entry.index) }

  /// The entry's size plus the bytes of history a compaction in it dropped: a compaction is a few
  /// bytes in the log but can drop most of what the last snapshot holds, and a restart that loads
  /// that snapshot rebuilds all of it only to drop it again (with a million keys overwritten once,
  /// restarts took 5.6–6.5 s and 1.5 GB; `bench/memory.sh`).
  public func snapshotWeight(ofApplied entry: LogEntry) -> Int {
    entry.data.count + bytesDroppedByLastApply
  }
}
