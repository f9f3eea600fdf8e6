import Raft

// Throughput of the consensus core alone: a 3-node cluster in one process, messages handed over
// directly, persistence acknowledged at once. What this measures is the CPU cost of the algorithm
// (appends, acknowledgements, commit computation, apply hand-out): the ceiling that storage and
// network can only lower.
//
//   swift run -c release raft-core-bench [entriesPerBatch] [seconds]

let arguments = CommandLine.arguments
let batchSize = arguments.count > 1 ? Int(arguments[1]) ?? 256 : 256
let seconds = arguments.count > 2 ? Double(arguments[2]) ?? 3 : 3
let batch = Array(repeating: [UInt8](repeating: 0xAB, count: 256), count: batchSize)
let cluster = CoreCluster()
let clock = ContinuousClock()
let start = clock.now
while clock.now - start < .seconds(seconds) {
  for _ in 0..<16 {
    try! cluster.leader.propose(batch: batch)
    cluster.drain(cluster.leader)
    cluster.deliverAll()
  }
}
let elapsed = clock.now - start
let secondsElapsed = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
let rate = Double(cluster.committedOnLeader) / secondsElapsed
print(
  "raft-core-bench: 3 nodes, \(batchSize) entries of 256 B per proposal: \(cluster.committedOnLeader) entries "
    + "committed and applied in \(Int(secondsElapsed * 1000)) ms = \(Int(rate)) entries/s "
    + "(\(Int(rate * 256 / 1_048_576)) MiB/s of payload)")
