import Foundation
@_spi(Testing) import Raft

/// Runs many seeds, spread over the available cores, and summarizes.
public enum SimulationSuite {
  public struct Summary: Sendable, CustomStringConvertible {
    public var nodeCount: Int
    public var seeds = 0
    public var events = 0
    public var simulatedMicros: UInt64 = 0
    public var elections = 0
    public var crashes = 0
    public var partitions = 0
    public var membershipChanges = 0
    public var transfers = 0
    public var snapshotsInstalled = 0
    public var proposalsAcknowledged = 0
    public var readsServed = 0
    public var byzantineMessages = 0
    public var byzantineRefused = 0
    /// Failing runs, lowest seed first.
    public var failures: [SimulationReport] = []

    public var description: String {
      "\(nodeCount)-node cluster (production RaftGroup runtime): \(seeds) seeds, \(events) events, \(simulatedMicros / 1_000_000)s simulated, "
        + "\(elections) elections, \(crashes) crashes, \(partitions) partitions, \(membershipChanges) membership "
        + "changes, \(transfers) transfers, \(snapshotsInstalled) snapshots installed, \(proposalsAcknowledged) "
        + "writes acknowledged, \(readsServed) reads checked"
        + (byzantineMessages > 0
          ? ", \(byzantineMessages) byzantine messages (\(byzantineRefused) refused)" : "")
        + ": \(failures.isEmpty ? "all passed" : "\(failures.count) FAILED")"
    }

    mutating func add(_ report: SimulationReport) {
      seeds += 1
      events += report.events
      simulatedMicros += report.simulatedMicros
      elections += report.leaderElections
      crashes += report.crashes
      partitions += report.partitions
      membershipChanges += report.membershipChanges
      transfers += report.leadershipTransfers
      snapshotsInstalled += report.snapshotsInstalled
      proposalsAcknowledged += report.proposalsAcknowledged
      readsServed += report.readsServed
      byzantineMessages += report.byzantineMessages
      byzantineRefused += report.byzantineRefused
      if !report.passed { failures.append(report) }
    }
  }

  /// Runs `seeds` with `configure` applied to each run's options, on `parallelism` threads. The runs
  /// are long and CPU-bound, so they get threads of their own rather than the Swift concurrency pool,
  /// which they would otherwise monopolize (starving every other task in the process).
  public static func run(
    seeds: ClosedRange<UInt64>, nodeCount: Int, parallelism: Int = 2,
    configure: @escaping @Sendable (inout SimulationOptions) -> Void = { _ in }
  ) async -> Summary {
    let workers = max(1, parallelism)
    let collected = ReportCollector()
    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
      let group = DispatchGroup()
      for worker in 0..<workers {
        group.enter()
        let thread = Thread {
          var seed = seeds.lowerBound + UInt64(worker)
          while seed <= seeds.upperBound {
            var options = SimulationOptions(seed: seed, nodeCount: nodeCount)
            configure(&options)
            var report = ClusterSimulation(options: options).run()
            if report.passed { report.trace = [] }
            collected.append(report)
            seed += UInt64(workers)
          }
          group.leave()
        }
        thread.stackSize = 8 << 20
        thread.start()
      }
      group.notify(queue: .global()) { done.resume() }
    }
    var summary = Summary(nodeCount: nodeCount)
    for report in collected.reports.sorted(by: { $0.seed < $1.seed }) { summary.add(report) }
    return summary
  }

  /// The first seed in `seeds` whose run reports a violation, with its report.
  public static func firstFailure(
    seeds: ClosedRange<UInt64>, nodeCount: Int, matching: (Violation) -> Bool = { _ in true },
    configure: (inout SimulationOptions) -> Void
  ) -> SimulationReport? {
    for seed in seeds {
      var options = SimulationOptions(seed: seed, nodeCount: nodeCount)
      configure(&options)
      let report = ClusterSimulation(options: options).run()
      if let violation = report.violation, matching(violation) { return report }
    }
    return nil
  }
}

/// Reports gathered from the worker threads.
private final class ReportCollector: @unchecked Sendable {
  // Unchecked: `reports` is only touched under `lock`.
  private let lock = NSLock()
  private var storage: [SimulationReport] = []

  func append(_ report: SimulationReport) { lock.withLock { storage.append(report) } }

  var reports: [SimulationReport] { lock.withLock { storage } }
}
