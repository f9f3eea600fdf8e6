import ArgumentParser
import Foundation
import Linearizability
import RaftDBVerify

/// `raftctl verify`: Jepsen-style verification of a real local cluster.
struct Verify: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run a real cluster under faults, record a history, and check it is linearizable.",
    discussion: """
      Launches raftdb processes behind a fault-injecting proxy on every peer link, runs concurrent \
      clients (reads, unique writes, compare-and-sets, deletes over a few keys; uncertain writes are \
      retried with their Idempotency-Key), injects faults from a seeded schedule, heals, reads every key \
      once more, and checks the whole history for linearizability. The same seed gives the same fault \
      schedule (timings on a real machine still vary).

      What CI runs; a 10-minute, 5-node run; a run that shows the checker catches stale reads; a \
      re-check of a saved history:

        raftctl verify --duration 60
        raftctl verify --nodes 5 --duration 600 \\
          --faults kill,pause,partition,membership,crash-all
        raftctl verify --level stale --read-any-node --expect-violation
        raftctl verify --replay runs/history.txt
      """)

  @Option(help: "Cluster size (3 or 5).") var nodes = 3
  @Option(help: "Seconds of faults and load.") var duration = 60
  @Option(help: "Seed for the fault schedule and the clients.") var seed: UInt64 = 1
  @Option(help: "Faults: kill, pause, partition, membership, crash-all (comma separated, or none).")
  var faults = "kill,pause,partition"
  @Option(help: "Read level for the workload: consistent, default or stale.") var level = "consistent"
  @Flag(help: "Send every request to a random node rather than to the leader.") var readAnyNode = false
  @Option(help: "Concurrent clients.") var clients = 8
  @Option(help: "Keys the clients share.") var keys = 5
  @Option(
    help:
      "Percentage of operations sent through the multi-version store's routes (GET /key/K?meta=true, POST /txn) instead of the course's."
  )
  var multiVersionPercent = 50
  @Option(help: "Working directory (data, logs, saved histories).") var dir: String?
  @Option(help: "The raftdb executable (default: next to raftctl).") var raftdb: String?
  @Option(help: "First loopback port to use (three per node).") var firstPort = 21000
  @Flag(help: "Succeed only if a violation is found (for showing the checker catches stale reads).")
  var expectViolation = false
  @Option(help: "Check a saved history instead of running a cluster.") var replay: String?
  @Flag(help: "Keep the working directory (data, logs, history.txt) even when the run succeeds.")
  var keep = false

  func run() async throws {
    if let replay {
      let text = try String(contentsOfFile: replay, encoding: .utf8)
      let history = try History(decoding: text)
      let result = LinearizabilityChecker().check(history)
      print("replay of \(history.operations.count) operations: \(result)")
      if !result.isLinearizable { throw ExitCode(1) }
      return
    }
    var kinds: [FaultKind] = []
    if faults != "none" {
      for name in faults.split(separator: ",") {
        guard let kind = FaultKind(rawValue: String(name)) else {
          throw ValidationError("unknown fault \(name)")
        }
        kinds.append(kind)
      }
    }
    guard (0...100).contains(multiVersionPercent) else {
      throw ValidationError("--multi-version-percent must be 0 to 100")
    }
    guard ["consistent", "default", "stale", "linearizable"].contains(level) else {
      throw ValidationError("unknown level \(level)")
    }
    let directory = URL(
      fileURLWithPath: dir
        ?? FileManager.default.temporaryDirectory.appendingPathComponent("raftdb-verify-\(seed)").path)
    try? FileManager.default.removeItem(at: directory)
    let executable =
      raftdb.map { URL(fileURLWithPath: $0) }
      ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
      .appendingPathComponent("raftdb")
    var options = VerifyOptions(directory: directory, raftdb: executable)
    options.nodes = nodes
    options.duration = .seconds(duration)
    options.seed = seed
    options.faults = kinds
    options.firstPort = firstPort
    options.workload.clients = clients
    options.workload.keys = keys
    options.workload.readLevel = level
    options.workload.readFromAnyNode = readAnyNode
    options.workload.multiVersionPercent = multiVersionPercent
    print("verify: working directory \(directory.path) (removed after a successful run unless --keep)")
    // Faults and progress print as they happen (the fault log is not repeated at the end).
    let report = try await Verifier.run(options) { message in print("verify: \(message)") }
    print(report.summaryLine)
    let historyPath = directory.appendingPathComponent("history.txt")
    let succeeded =
      switch report.result {
      case .linearizable: !expectViolation
      case .notLinearizable: expectViolation
      case .unknown: false
      }
    // The history is saved when someone will want it: after a failure, a violation, or on --keep.
    if !succeeded || keep || !report.result.isLinearizable {
      try report.history.encoded().write(to: historyPath, atomically: true, encoding: .utf8)
    }
    defer {
      if succeeded && !keep {
        try? FileManager.default.removeItem(at: directory)
        print("verify: removed \(directory.path) (pass --keep to keep data, logs and history)")
      }
    }
    switch report.result {
    case .linearizable:
      if expectViolation {
        print("expected a violation and found none (history: \(historyPath.path))")
        throw ExitCode(1)
      }
    case .notLinearizable(let key, let minimal, let explanation):
      let violationPath = directory.appendingPathComponent("violation.txt")
      try (explanation + "\n" + History(minimal).encoded()).write(
        to: violationPath, atomically: true, encoding: .utf8)
      print("violation on key \(key); smallest failing history:\n\(History(minimal).rendered())")
      print(
        "saved: \(historyPath.path) and \(violationPath.path); replay: raftctl verify --replay \(historyPath.path)"
      )
      if !expectViolation { throw ExitCode(1) }
    case .unknown(let reason):
      print("the checker reached no verdict: \(reason) (history: \(historyPath.path))")
      throw ExitCode(2)
    }
  }
}
