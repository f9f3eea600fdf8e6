@_spi(Testing) import Raft
@_spi(Testing) import RaftGroup

/// What one simulation run does. Everything not fixed here is drawn from the seed.
public struct SimulationOptions: Sendable {
  public var seed: UInt64
  /// Voters in the initial configuration (the issue asks for 3, 5 and 7).
  public var nodeCount: Int
  /// Extra servers, started empty, that membership changes can add.
  public var spareNodes = 1
  /// How long faults are injected before the network heals and crashed nodes restart.
  public var faultPhaseTicks = 600
  /// Liveness: after healing, a stable leader must emerge within this many ticks...
  public var leaderDeadlineTicks = 300
  /// ...and every proposal accepted after that must be applied on every live member within this.
  public var applyDeadlineTicks = 300
  public var postHealProposals = 10
  public var electionTimeoutTicks = 10
  public var heartbeatTicks = 1
  /// Nominal tick length in simulated microseconds; each node's clock drifts slightly from it.
  public var tickMicros: UInt64 = 10_000
  /// Faults to inject; nil draws a random profile from the seed.
  public var faults: FaultProfile?
  @_spi(Testing) public var plantedBugs: PlantedBugs = []
  /// Bugs planted in the runtime (`RaftGroup`) rather than the core.
  @_spi(Testing) public var runtimeBugs: RuntimeBugs = []
  /// How many of the last events a failure report shows.
  public var traceCapacity = 60
  /// A byzantine peer that sends random, mutated and replayed messages during the fault phase;
  /// nil for none.
  public var byzantine: ByzantineMode?
  /// Mean ticks between two of its messages.
  public var byzantineIntervalTicks = 0.2

  public init(seed: UInt64, nodeCount: Int) {
    precondition(nodeCount >= 1)
    self.seed = seed
    self.nodeCount = nodeCount
  }
}

/// Fault intensities. Intervals are means, in ticks; zero disables that fault.
public struct FaultProfile: Sendable, CustomStringConvertible {
  public var dropProbability = 0.0
  public var duplicateProbability = 0.0
  /// Chance that a message is delayed by up to `longDelayTicks` instead of a normal round trip:
  /// this is what reorders messages.
  public var longDelayProbability = 0.0
  public var longDelayTicks = 5
  public var partitionIntervalTicks = 0
  public var partitionDurationTicks = 30
  public var crashIntervalTicks = 0
  public var downtimeTicks = 40
  /// Chance that a crash takes down every node at once.
  public var crashAllProbability = 0.0
  /// Chance that unsynced writes partly survive a crash (a prefix of the write stream).
  public var tornWriteProbability = 0.5
  /// Chance that a node crashes within half a tick of winning an election (a flapping leader): this is
  /// what exposes commit-rule bugs, which need a leader to die between replicating old entries and
  /// replicating its own no-op (Raft paper, Figure 8).
  public var newLeaderCrashProbability = 0.0
  /// The crash comes at a uniformly random moment within this many ticks of the election.
  public var newLeaderCrashWithinTicks = 0.5
  /// Bytes of entries per append message; small values split the log over many messages.
  public var maxMessageBytes = 512
  public var membershipChangeIntervalTicks = 0
  public var transferIntervalTicks = 0
  public var proposalIntervalTicks = 1.0
  public var readIntervalTicks = 1.0
  /// Each node snapshots and compacts its log after applying this many entries.
  public var snapshotEveryEntries: UInt64 = 40
  public var compactionRetainEntries: UInt64 = 5

  public init() {}

  /// No faults at all: what the network looks like after healing.
  public static let calm = FaultProfile()

  /// Leaders crash moments after winning, come back quickly, and the log travels in small messages:
  /// the history of the Raft paper's Figure 8, where a leader dies between replicating an older
  /// term's entries and replicating its own. Commit-rule bugs surface here first.
  public static var flappingLeaders: FaultProfile {
    var profile = FaultProfile()
    profile.newLeaderCrashProbability = 1
    profile.newLeaderCrashWithinTicks = 0.5
    profile.downtimeTicks = 20
    profile.maxMessageBytes = 64
    profile.proposalIntervalTicks = 0.1
    profile.readIntervalTicks = 3
    profile.dropProbability = 0.02
    profile.tornWriteProbability = 0.5
    return profile
  }

  /// A profile drawn from the seed, so that the seeds together cover gentle and brutal runs.
  static func random(using rng: inout SplitMix64) -> FaultProfile {
    func pick<T>(_ choices: [T]) -> T { choices[Int(rng.next() % UInt64(choices.count))] }
    if rng.next() % 8 == 0 { return .flappingLeaders }
    var profile = FaultProfile()
    profile.dropProbability = pick([0, 0.01, 0.05, 0.15])
    profile.duplicateProbability = pick([0, 0.01, 0.05])
    profile.longDelayProbability = pick([0, 0.02, 0.1])
    profile.longDelayTicks = pick([2, 5, 15])
    profile.partitionIntervalTicks = pick([0, 40, 80, 150])
    profile.partitionDurationTicks = pick([10, 30, 60])
    profile.crashIntervalTicks = pick([0, 50, 100, 200])
    profile.downtimeTicks = pick([5, 30, 80])
    profile.crashAllProbability = pick([0, 0.05, 0.2])
    profile.tornWriteProbability = pick([0, 0.5, 1])
    profile.newLeaderCrashProbability = pick([0, 0, 0.1, 0.3])
    profile.maxMessageBytes = pick([64, 512, 4096])
    profile.membershipChangeIntervalTicks = pick([0, 60, 150])
    profile.transferIntervalTicks = pick([0, 50, 120])
    profile.proposalIntervalTicks = pick([0.3, 1, 3])
    profile.readIntervalTicks = pick([0.5, 1, 3])
    profile.snapshotEveryEntries = pick([10, 40, 200])
    profile.compactionRetainEntries = pick([0, 5, 50])
    return profile
  }

  public var description: String {
    "drop=\(dropProbability) dup=\(duplicateProbability) longDelay=\(longDelayProbability)x\(longDelayTicks) "
      + "partition=\(partitionIntervalTicks)/\(partitionDurationTicks) crash=\(crashIntervalTicks)/\(downtimeTicks) "
      + "crashAll=\(crashAllProbability) leaderCrash=\(newLeaderCrashProbability) msgBytes=\(maxMessageBytes) torn=\(tornWriteProbability) membership=\(membershipChangeIntervalTicks) "
      + "transfer=\(transferIntervalTicks) snapshotEvery=\(snapshotEveryEntries)"
  }
}

/// What the simulator's byzantine peer may forge.
public enum ByzantineMode: Sendable, Hashable {
  /// Forged messages carry senders outside every configuration (a stranger on the peer network),
  /// and genuine messages are replayed. Raft's safety must hold for the honest nodes.
  case outsider
  /// Forged messages may also claim to come from members. Without peer authentication no protocol
  /// can keep its safety against that (docs/SECURITY.md), so the checker's safety verdicts are not
  /// the point: what must hold is that no input traps a node.
  case spoofer
}
