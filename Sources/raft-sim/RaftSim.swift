import ArgumentParser
@_spi(Testing) import Raft
@_spi(Testing) import RaftGroup
@_spi(Testing) import RaftSimulation

@main
struct RaftSim: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "raft-sim",
    abstract: "Run the seeded Raft cluster simulator.",
    discussion: """
      Every run is determined by its seed and node count: a failing seed replays exactly.
      Examples:
        raft-sim --nodes 3,5,7 --seeds 1-2000          # what CI runs
        raft-sim --nodes 5 --seeds 1-100000            # a soak
        raft-sim --nodes 3 --seed 1234 --trace         # replay one seed, print its last events
        raft-sim --nodes 3 --seeds 1-500 --bug skipUpToDateCheck   # show a checker biting
        raft-sim --nodes 3 --seeds 1-500 --bug acknowledgeBeforeFsync   # a bug in the runtime
      """)

  @Option(help: "Cluster sizes, comma separated.")
  var nodes: String = "3"

  @Option(help: "A seed range such as 1-2000.")
  var seeds: String = "1-100"

  @Option(help: "Run a single seed (overrides --seeds).")
  var seed: UInt64?

  @Flag(help: "Print the trace of the last events even when the run passes.")
  var trace = false

  @Option(
    help:
      "Plant a known bug in the core (\(PlantedBugs.all.map(\.0).joined(separator: ", "))) or in the runtime (\(RuntimeBugs.all.map(\.0).joined(separator: ", ")))."
  )
  var bug: String?

  @Option(help: "Fault profile: random (drawn from each seed) or flapping-leaders.")
  var profile: String = "random"

  @Option(
    help: "A byzantine peer: none, outsider (forges non-member senders) or spoofer (forges members too).")
  var byzantine: String = "none"

  @Option(help: "Ticks of fault injection before healing.")
  var faultTicks: Int?

  @Option(help: "How many of the last events a report shows.")
  var traceEvents: Int = 60

  @Option(help: "Parallel workers.")
  var jobs: Int = 2

  mutating func run() async throws {
    let sizes = nodes.split(separator: ",").compactMap { Int($0) }
    guard !sizes.isEmpty else { throw ValidationError("--nodes needs sizes like 3,5,7") }
    var planted: PlantedBugs = []
    var plantedInRuntime: RuntimeBugs = []
    if let bug {
      if let match = PlantedBugs.all.first(where: { $0.0 == bug }) {
        planted = match.1
      } else if let match = RuntimeBugs.all.first(where: { $0.0 == bug }) {
        plantedInRuntime = match.1
      } else {
        let known = PlantedBugs.all.map(\.0) + RuntimeBugs.all.map(\.0)
        throw ValidationError("unknown bug \(bug); known: \(known.joined(separator: ", "))")
      }
    }
    let runtimeBugs = plantedInRuntime
    let faultTicks = self.faultTicks
    let bugs = planted
    let traceEvents = self.traceEvents
    let profile: FaultProfile?
    switch self.profile {
    case "random": profile = nil
    case "flapping-leaders": profile = .flappingLeaders
    default: throw ValidationError("unknown profile \(self.profile); known: random, flapping-leaders")
    }
    let byzantineMode: ByzantineMode?
    switch byzantine {
    case "none": byzantineMode = nil
    case "outsider": byzantineMode = .outsider
    case "spoofer": byzantineMode = .spoofer
    default: throw ValidationError("unknown byzantine mode \(byzantine); known: none, outsider, spoofer")
    }
    let configure: @Sendable (inout SimulationOptions) -> Void = { options in
      options.plantedBugs = bugs
      options.runtimeBugs = runtimeBugs
      options.byzantine = byzantineMode
      options.traceCapacity = traceEvents
      options.faults = profile
      if let faultTicks { options.faultPhaseTicks = faultTicks }
    }
    if let seed {
      var failed = false
      for size in sizes {
        var options = SimulationOptions(seed: seed, nodeCount: size)
        configure(&options)
        let report = ClusterSimulation(options: options).run()
        print(report)
        if trace && report.passed {
          print(
            "  faults: \(report.faults)\n  last events:\n"
              + report.trace.map { "    " + $0 }.joined(separator: "\n"))
        }
        failed = failed || !report.passed
      }
      if failed { throw ExitCode(1) }
      return
    }
    let range = try parseRange(seeds)
    var failed = false
    for size in sizes {
      let start = ContinuousClock.now
      let summary = await SimulationSuite.run(
        seeds: range, nodeCount: size, parallelism: jobs, configure: configure)
      print("\(summary) [\(ContinuousClock.now - start)]")
      for failure in summary.failures.prefix(3) { print(failure) }
      failed = failed || !summary.failures.isEmpty
    }
    if failed { throw ExitCode(1) }
  }

  func parseRange(_ text: String) throws -> ClosedRange<UInt64> {
    let parts = text.split(separator: "-").compactMap { UInt64($0) }
    guard parts.count == 2, parts[0] <= parts[1] else {
      throw ValidationError("--seeds needs a range like 1-2000")
    }
    return parts[0]...parts[1]
  }
}
