@_spi(Testing) import Raft

/// A broken safety or liveness property, with what the checker saw.
public struct Violation: Error, Sendable, CustomStringConvertible {
  public enum Kind: String, Sendable, CaseIterable {
    case electionSafety = "election safety (two leaders in one term)"
    case leaderAppendOnly = "leader append-only"
    case logMatching = "log matching"
    case leaderCompleteness = "leader completeness"
    case committedEntryChanged = "committed entry changed"
    case stateMachineSafety = "state machine safety"
    case staleRead = "linearizable read missed a committed write"
    case livenessNoLeader = "liveness: no stable leader after healing"
    case livenessNotApplied = "liveness: accepted proposal not applied everywhere after healing"
  }

  public var kind: Kind
  public var detail: String
  /// Simulated time, in microseconds.
  public var time: UInt64

  public var description: String { "\(kind.rawValue): \(detail) at t=\(Double(time) / 1000)ms" }
}

/// What one run did, and whether it broke anything.
public struct SimulationReport: Sendable, CustomStringConvertible {
  public var seed: UInt64
  public var nodeCount: Int
  public var faults: String = ""
  public var events = 0
  public var simulatedMicros: UInt64 = 0
  public var messagesDelivered = 0
  public var proposalsAccepted = 0
  public var proposalsAcknowledged = 0
  public var readsServed = 0
  public var leaderElections = 0
  public var crashes = 0
  public var partitions = 0
  public var membershipChanges = 0
  public var leadershipTransfers = 0
  public var snapshotsInstalled = 0
  /// Messages the byzantine peer sent, and how many of them the receivers' cores refused.
  public var byzantineMessages = 0
  public var byzantineRefused = 0
  public var violation: Violation?
  /// The last events before the end of the run, oldest first.
  public var trace: [String] = []
  /// A fingerprint of every event in order: equal fingerprints mean identical runs.
  public var fingerprint: UInt64 = 0

  public var passed: Bool { violation == nil }

  public var description: String {
    var text =
      "seed \(seed) nodes \(nodeCount): \(passed ? "ok" : "FAILED") events=\(events) "
      + "time=\(simulatedMicros / 1000)ms proposals=\(proposalsAccepted)/\(proposalsAcknowledged) acked "
      + "reads=\(readsServed) elections=\(leaderElections) crashes=\(crashes) partitions=\(partitions) "
      + "membership=\(membershipChanges) transfers=\(leadershipTransfers) snapshots=\(snapshotsInstalled)"
      + (byzantineMessages > 0 ? " byzantine=\(byzantineMessages)/\(byzantineRefused) refused" : "")
    if let violation {
      text +=
        "\n  violation: \(violation)\n  faults: \(faults)\n  replay: raft-sim --nodes \(nodeCount) --seed \(seed) --trace"
      text += "\n  last events:\n" + trace.map { "    " + $0 }.joined(separator: "\n")
    }
    return text
  }
}

/// One event worth showing in a failure's trace. Stored compactly and formatted only on failure,
/// since a run records tens of thousands of them.
enum TraceEvent {
  case deliver(Message)
  case drop(Message, reason: StaticString)
  case softState(NodeID, SoftState)
  case crash(NodeID, survivingWrites: Int, pendingWrites: Int)
  case restart(NodeID, StoredStateSummary)
  case propose(NodeID, LogPosition)
  case readAnswered(NodeID, requestID: UInt64, ReadResult, required: UInt64)
  case configurationChange(NodeID, ConfigurationChange, accepted: Bool)
  case transfer(from: NodeID, to: NodeID)
  case snapshotTaken(NodeID, index: UInt64)
  case snapshotInstalled(NodeID, index: UInt64)
  case note(String)
}

struct StoredStateSummary {
  var hardState: HardState
  var snapshotIndex: UInt64
  var lastIndex: UInt64
}

extension TraceEvent: CustomStringConvertible {
  var description: String {
    switch self {
    case .deliver(let m): "deliver \(m)"
    case .drop(let m, let reason): "drop(\(reason)) \(m)"
    case .softState(let id, let s): "\(id) becomes \(s)"
    case .crash(let id, let surviving, let pending):
      "\(id) CRASH (\(surviving)/\(pending) unsynced writes survive)"
    case .restart(let id, let s):
      "\(id) RESTART \(s.hardState) snapshot=\(s.snapshotIndex) last=\(s.lastIndex)"
    case .propose(let id, let p): "\(id) accepts proposal at \(p)"
    case .readAnswered(let id, let rid, let result, let required):
      "\(id) read #\(rid) -> \(result) (committed before it began: \(required))"
    case .configurationChange(let id, let change, let accepted):
      "\(id) proposes \(change)\(accepted ? "" : " (refused)")"
    case .transfer(let from, let to): "\(from) transfers leadership to \(to)"
    case .snapshotTaken(let id, let index): "\(id) snapshots through \(index)"
    case .snapshotInstalled(let id, let index): "\(id) installs leader snapshot \(index)"
    case .note(let text): text
    }
  }
}

/// A fixed-size ring of recent events.
struct TraceRing {
  private var items: [(time: UInt64, event: TraceEvent)?]
  private var next = 0
  private var filled = false

  init(capacity: Int) { items = Array(repeating: nil, count: max(capacity, 1)) }

  mutating func record(_ time: UInt64, _ event: TraceEvent) {
    items[next] = (time, event)
    next = (next + 1) % items.count
    if next == 0 { filled = true }
  }

  var lines: [String] {
    let ordered = filled ? Array(items[next...] + items[..<next]) : Array(items[..<next])
    return ordered.compactMap { $0 }.map { "t=\(String(format3: Double($0.time) / 1000))ms \($0.event)" }
  }
}

extension String {
  init(format3 value: Double) {
    let scaled = (value * 1000).rounded()
    let whole = Int(scaled / 1000)
    let fraction = Int(abs(scaled).truncatingRemainder(dividingBy: 1000))
    let padded = String(fraction)
    self = "\(whole)." + String(repeating: "0", count: 3 - padded.count) + padded
  }
}
