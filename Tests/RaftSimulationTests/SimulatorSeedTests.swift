import Foundation
@_spi(Testing) import Raft
@_spi(Testing) import RaftGroup
@_spi(Testing) import RaftSimulation
import Testing

/// The seeded simulator over many seeds, for each cluster size the issue names. Every seed draws its
/// own fault profile (drops, duplicates, reordering, partitions of every shape, crashes with torn
/// writes, flapping leaders, membership changes, leadership transfers) and checks safety after every
/// event and liveness after healing.
@Suite struct SimulatorSeedTests {
  /// `RAFT_SIM_SEEDS` overrides the default 2,000 seeds per size (for a quick local run, or a soak).
  static let seedsPerSize: UInt64 =
    ProcessInfo.processInfo.environment["RAFT_SIM_SEEDS"].flatMap(UInt64.init) ?? 2000

  @Test(arguments: [3, 5, 7])
  func everySeedKeepsRaftSafeAndLive(nodeCount: Int) async {
    let start = ContinuousClock.now
    let summary = await SimulationSuite.run(
      seeds: 1...Self.seedsPerSize, nodeCount: nodeCount, parallelism: 2)
    print("simulator: \(summary) [\(ContinuousClock.now - start)]")
    #expect(summary.seeds == Int(Self.seedsPerSize))
    #expect(summary.elections >= summary.seeds, "every run elects at least one leader")
    #expect(
      summary.crashes > 0 && summary.partitions > 0 && summary.membershipChanges > 0 && summary.transfers > 0)
    #expect(summary.snapshotsInstalled > 0 && summary.proposalsAcknowledged > 0 && summary.readsServed > 0)
    for failure in summary.failures.prefix(3) {
      Issue.record("\(failure)")
    }
    #expect(summary.failures.isEmpty)
  }
}

/// Proof that the checkers bite: with a known bug planted in the core, the simulator must report the
/// matching violation within a bounded number of seeds. (The first detections are at seeds 1–32; the
/// bound leaves a wide margin.)
@Suite struct PlantedBugTests {
  struct Case: Sendable, CustomTestStringConvertible {
    var name: String
    var bug: PlantedBugs
    var expected: Set<Violation.Kind>
    /// Commit-rule bugs need the Figure 8 history, which the flapping-leaders profile produces.
    var profile: FaultProfile?
    var testDescription: String { name }
  }

  static let seedBound: UInt64 = 500

  static let cases: [Case] = [
    Case(name: "grantTwoVotesPerTerm", bug: .grantTwoVotesPerTerm, expected: [.electionSafety]),
    Case(
      name: "commitEarlierTermByCounting", bug: .commitEarlierTermByCounting,
      expected: [.leaderCompleteness, .committedEntryChanged, .stateMachineSafety], profile: .flappingLeaders),
    Case(
      name: "skipUpToDateCheck", bug: .skipUpToDateCheck,
      // A stale node can win with a configuration long replaced, whose majority overlaps nobody's
      // newer one: two leaders of one term.
      expected: [.leaderCompleteness, .committedEntryChanged, .stateMachineSafety, .electionSafety]),
    Case(name: "readIndexWithoutHeartbeat", bug: .readIndexWithoutHeartbeat, expected: [.staleRead]),
  ]

  @Test(arguments: cases)
  func simulatorReportsPlantedBug(_ planted: Case) throws {
    let failure = SimulationSuite.firstFailure(seeds: 1...Self.seedBound, nodeCount: 3) { options in
      options.plantedBugs = planted.bug
      options.faults = planted.profile
    }
    let report = try #require(failure, "\(planted.name) went undetected for \(Self.seedBound) seeds")
    let violation = try #require(report.violation)
    print("planted bug \(planted.name): detected at seed \(report.seed) as \(violation)")
    #expect(planted.expected.contains(violation.kind), "\(violation)")
  }

  @Test func everyPlantedBugHasATest() {
    // acceptNonMembers needs the byzantine peer: ByzantineSimulationTests plants it.
    #expect(Set(PlantedBugs.all.map(\.0)) == Set(Self.cases.map(\.name)).union(["acceptNonMembers"]))
  }
}

/// The simulator runs the production runtime (`RaftGroup`), so a bug planted there, not in the core,
/// must be caught too.
@Suite struct RuntimeBugTests {
  struct Case: Sendable, CustomTestStringConvertible {
    var name: String
    var bug: RuntimeBugs
    var expected: Set<Violation.Kind>
    var testDescription: String { name }
  }

  static let cases: [Case] = [
    // Promises that a crash then breaks: a vote given twice, or entries a leader counted (and
    // stops resending) gone from a follower's disk.
    Case(
      name: "acknowledgeBeforeFsync", bug: .acknowledgeBeforeFsync,
      expected: [
        .electionSafety, .leaderCompleteness, .committedEntryChanged, .stateMachineSafety, .logMatching,
        .livenessNotApplied,
      ]),
    Case(name: "applyBeforeRestore", bug: .applyBeforeRestore, expected: [.stateMachineSafety]),
  ]

  @Test(arguments: cases)
  func simulatorReportsRuntimeBug(_ planted: Case) throws {
    let failure = SimulationSuite.firstFailure(seeds: 1...PlantedBugTests.seedBound, nodeCount: 3) {
      $0.runtimeBugs = planted.bug
    }
    let report = try #require(
      failure, "\(planted.name) went undetected for \(PlantedBugTests.seedBound) seeds")
    let violation = try #require(report.violation)
    print("planted runtime bug \(planted.name): detected at seed \(report.seed) as \(violation)")
    #expect(planted.expected.contains(violation.kind), "\(violation)")
  }

  @Test func everyRuntimeBugHasATest() {
    #expect(Set(RuntimeBugs.all.map(\.0)) == Set(Self.cases.map(\.name)))
  }
}

/// A seed reproduces its run exactly: the same events in the same order, the same verdict.
@Suite struct SimulatorDeterminismTests {
  func run(seed: UInt64, nodeCount: Int, bug: PlantedBugs = [], profile: FaultProfile? = nil)
    -> SimulationReport
  {
    var options = SimulationOptions(seed: seed, nodeCount: nodeCount)
    options.plantedBugs = bug
    options.faults = profile
    return ClusterSimulation(options: options).run()
  }

  @Test func aPassingSeedReplaysIdentically() {
    let first = run(seed: 42, nodeCount: 5)
    let second = run(seed: 42, nodeCount: 5)
    #expect(first.passed)
    #expect(first.fingerprint == second.fingerprint)
    #expect(first.events == second.events && first.messagesDelivered == second.messagesDelivered)
    #expect(first.trace == second.trace)
  }

  @Test func differentSeedsTakeDifferentPaths() {
    #expect(run(seed: 1, nodeCount: 3).fingerprint != run(seed: 2, nodeCount: 3).fingerprint)
  }

  @Test func aFailingSeedReplaysTheSameViolationAndTrace() throws {
    let failing = try #require(
      SimulationSuite.firstFailure(seeds: 1...200, nodeCount: 3) {
        $0.plantedBugs = .readIndexWithoutHeartbeat
      })
    let replay = run(seed: failing.seed, nodeCount: 3, bug: .readIndexWithoutHeartbeat)
    #expect(replay.violation?.description == failing.violation?.description)
    #expect(replay.fingerprint == failing.fingerprint)
    #expect(replay.trace == failing.trace && !replay.trace.isEmpty)
    let text = replay.description
    #expect(
      text.contains("seed \(failing.seed)") && text.contains("raft-sim --nodes 3 --seed \(failing.seed)"))
  }
}
