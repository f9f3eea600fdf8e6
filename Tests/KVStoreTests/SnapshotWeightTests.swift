import Raft
import RaftGroup
import Testing

@testable import KVStore

/// What an applied command counts towards the group's byte threshold for the next snapshot
/// (`KVStateMachine.snapshotWeight`): its size, plus the history a compaction in it dropped, so that
/// a compaction of most of the state is followed by a snapshot without it (and a restart does not
/// rebuild the dropped history only to drop it again).
@Suite struct SnapshotWeightTests {
  @Test func aCompactionWeighsWhatItDropped() throws {
    let driver = MultiVersionMachineTests.modern()
    let value = String(repeating: "v", count: 1_000)
    func weightOfNext(_ command: KVCommand) -> Int {
      let data = KVRequest(command: command, proposedAtMillis: 1).encoded()
      driver.applyBytes(data)
      let weight = driver.machine.snapshotWeight(
        ofApplied: LogEntry(index: driver.machine.appliedIndex, term: 1, data: data))
      #expect(weight >= data.count)
      return weight - data.count
    }
    for round in 0..<3 {
      for key in 0..<100 {
        #expect(weightOfNext(.put([KeyValue(key: "key\(key)", value: value + "\(round)")])) == 0)
      }
    }
    let heldBefore = driver.machine.heldBytes
    #expect(
      weightOfNext(.compact(revision: Int64(driver.machine.revision))) == heldBefore
        - driver.machine.heldBytes)
    // Two of each key's three values went: 200 values of 1,001 bytes.
    #expect(heldBefore - driver.machine.heldBytes == 200 * 1_001)
    // A delete adds a tombstone; nothing is dropped until the next compaction.
    #expect(weightOfNext(.delete(key: "key1")) == 0)
    #expect(weightOfNext(.compact(revision: Int64(driver.machine.revision))) == 1_001 + 4)
    // The key (4 bytes) went with its last value. A failed compaction drops nothing.
    #expect(weightOfNext(.compact(revision: 1)) == 0)
  }
}
