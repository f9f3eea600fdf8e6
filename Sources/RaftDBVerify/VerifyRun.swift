import Foundation
import Linearizability
import NIOCore
import NIOPosix

/// One verification run's settings.
public struct VerifyOptions: Sendable {
  public var nodes = 3
  public var duration: Duration = .seconds(60)
  public var seed: UInt64 = 1
  public var faults: [FaultKind] = [.kill, .pause, .partition]
  public var workload = WorkloadOptions()
  public var directory: URL
  public var raftdb: URL
  public var firstPort = 21000
  /// Extra raftdb flags (the run uses short timeouts so that faults play out within seconds).
  public var raftdbArguments = [
    "-heartbeat-interval", "50", "-election-timeout", "500", "-request-timeout", "2000",
    "-snapshot-threshold", "2000", "-log-level", "info",
  ]

  public init(directory: URL, raftdb: URL) {
    self.directory = directory
    self.raftdb = raftdb
  }
}

/// What a run observed and concluded.
public struct VerifyReport: Sendable {
  public var options: VerifyOptions
  public var history: History
  public var result: CheckResult
  public var faultCounts: [FaultKind: Int]
  public var faultLog: [String]
  /// Reads that definitely returned a superseded value: the value's write was followed, before the
  /// read began, by another acknowledged write to the same key.
  public var staleReads: Int
  public var reads: Int

  public var ok: Int { history.operations.filter { if case .ok = $0.outcome { true } else { false } }.count }
  public var unknown: Int { history.operations.filter { $0.outcome == .unknown }.count }
  public var failed: Int { history.operations.filter { $0.outcome == .failed }.count }

  public var verdict: String {
    switch result {
    case .linearizable: "linearizable"
    case .notLinearizable(let key, _, _): "NOT LINEARIZABLE (key \(key))"
    case .unknown(let reason): "unknown (\(reason))"
    }
  }

  public var summaryLine: String {
    let faults = FaultKind.allCases.compactMap { kind in faultCounts[kind].map { "\(kind.rawValue)=\($0)" } }
    return "verify: \(options.nodes) nodes, \(options.duration.components.seconds) s, seed \(options.seed), "
      + "reads \(options.workload.readLevel)\(options.workload.readFromAnyNode ? " from any node" : ""): "
      + "ops ok=\(ok) unknown=\(unknown) failed=\(failed); faults \(faults.isEmpty ? "none" : faults.joined(separator: " ")); "
      + "stale reads \(staleReads)/\(reads); verdict: \(verdict)"
  }
}

/// Launches a cluster, runs the workload under the nemesis, heals, reads every key once more, and
/// checks the history.
public enum Verifier {
  /// `progress` is told what the run does as it happens: its phases, each fault, and every
  /// `progressInterval` the operations so far.
  public static func run(
    _ options: VerifyOptions, progressInterval: Duration = .seconds(10),
    progress: @escaping @Sendable (String) -> Void = { _ in }
  )
    async throws
    -> VerifyReport
  {
    let group = MultiThreadedEventLoopGroup.singleton
    let cluster = VerifyCluster(
      nodeCount: options.nodes, directory: options.directory, raftdb: options.raftdb, group: group,
      firstPort: options.firstPort, extraArguments: options.raftdbArguments)
    defer { cluster.stopAll() }
    progress("starting \(options.nodes) raftdb nodes in \(options.directory.path)")
    try await cluster.start()
    let recorder = HistoryRecorder()
    let deadline = ContinuousClock.now + options.duration
    let nemesis = Nemesis(cluster: cluster, kinds: options.faults, seed: options.seed) {
      progress("fault \($0)")
    }
    let clients = (0..<options.workload.clients).map {
      WorkloadClient(
        process: $0, cluster: cluster, options: options.workload, recorder: recorder, group: group,
        seed: options.seed)
    }
    progress(
      "running \(clients.count) client\(clients.count == 1 ? "" : "s") for \(options.duration) with faults \(options.faults.map(\.rawValue))"
    )
    let began = ContinuousClock.now
    await withTaskGroup(of: Void.self) { tasks in
      for client in clients { tasks.addTask { await client.run(until: deadline) } }
      tasks.addTask { await nemesis.run(until: deadline) }
      tasks.addTask {
        var lastCount = 0
        while ContinuousClock.now + progressInterval < deadline {
          try? await Task.sleep(for: progressInterval)
          let count = recorder.count
          let seconds = (ContinuousClock.now - began).components.seconds
          let rate = Double(count - lastCount) / (Double(progressInterval.components.seconds) + 1e-9)
          progress(String(format: "%lld s: %d operations (%.0f/s now)", seconds, count, rate))
          lastCount = count
        }
      }
    }
    nemesis.healAll()
    progress("healed; waiting for a leader, then reading every key")
    guard await cluster.waitFor(timeout: .seconds(30), { await cluster.leader() != nil }) else {
      throw VerifyError("no leader 30 seconds after healing")
    }
    let reader = WorkloadClient(
      process: options.workload.clients, cluster: cluster, options: options.workload, recorder: recorder,
      group: group, seed: options.seed)
    for k in 0..<options.workload.keys { await reader.finalRead("k\(k)") }
    let history = recorder.history
    progress("checking \(history.operations.count) operations")
    let result = LinearizabilityChecker(timeLimit: .seconds(300)).check(history)
    let (stale, reads) = staleReadCount(history)
    return VerifyReport(
      options: options, history: history, result: result, faultCounts: nemesis.counts, faultLog: nemesis.log,
      staleReads: stale, reads: reads)
  }

  /// Counts acknowledged reads that returned a value definitely superseded before they began.
  static func staleReadCount(_ history: History) -> (stale: Int, reads: Int) {
    var stale = 0
    var reads = 0
    for key in history.keys {
      let operations = history.operations(forKey: key)
      // Acknowledged writes of each value, with their real-time window.
      var writes: [(value: String?, invoked: UInt64, completed: UInt64)] = []
      for operation in operations {
        guard case .ok(let response) = operation.outcome, let completed = operation.completedAt else {
          continue
        }
        switch (operation.call, response) {
        case (.write(let value), _): writes.append((value, operation.invokedAt, completed))
        case (.delete, _): writes.append((nil, operation.invokedAt, completed))
        case (.cas(_, let new), .cas(true)): writes.append((new, operation.invokedAt, completed))
        default: break
        }
      }
      for operation in operations {
        guard case .read = operation.call, case .ok(.value(let observed)) = operation.outcome else {
          continue
        }
        reads += 1
        // The write that produced the observed value (values are unique; nil matches any delete).
        let sources = writes.filter { $0.value == observed }
        guard let source = sources.max(by: { $0.completed < $1.completed }), observed != nil else { continue }
        // Definitely stale: another write began after the source completed and itself completed before
        // this read began.
        if writes.contains(where: { $0.invoked > source.completed && $0.completed < operation.invokedAt }) {
          stale += 1
        }
      }
    }
    return (stale, reads)
  }
}
