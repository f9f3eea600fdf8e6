import Foundation
import Raft

/// Kinds of fault the verifier injects.
public enum FaultKind: String, Sendable, CaseIterable {
  /// kill -9 of a node (usually the leader), restarted a little later.
  case kill
  /// SIGSTOP of a node (usually the leader), SIGCONT a little later.
  case pause
  /// A network partition: the leader isolated, a majority/minority split, one-way loss, or a bridge.
  case partition
  /// A member removed and added back, under load.
  case membership
  /// kill -9 of every node at once, then all restarted.
  case crashAll = "crash-all"
}

/// Injects faults from a seeded schedule, and heals everything at the end.
final class Nemesis: @unchecked Sendable {
  // Unchecked: driven by one task; `counts` and `log` are only touched by it.
  private let cluster: VerifyCluster
  private let kinds: [FaultKind]
  private var rng: SplitMix64
  private(set) var counts: [FaultKind: Int] = [:]
  private(set) var log: [String] = []
  private let start = ContinuousClock.now
  /// Seconds each fault lasts, and between faults.
  private let holdSeconds: ClosedRange<Double>
  private let gapSeconds: ClosedRange<Double>
  /// Told each fault line as it happens, so that a long run shows its faults live.
  private let onNote: @Sendable (String) -> Void

  init(
    cluster: VerifyCluster, kinds: [FaultKind], seed: UInt64, holdSeconds: ClosedRange<Double> = 1...4,
    gapSeconds: ClosedRange<Double> = 0.5...2, onNote: @escaping @Sendable (String) -> Void = { _ in }
  ) {
    self.onNote = onNote
    self.cluster = cluster
    self.kinds = kinds
    rng = SplitMix64(seed: seed ^ 0x6E65_6D65_7369_73)
    self.holdSeconds = holdSeconds
    self.gapSeconds = gapSeconds
  }

  private func uniform(_ range: ClosedRange<Double>) -> Double {
    range.lowerBound + Double(rng.next() % 1_000_000) / 1_000_000 * (range.upperBound - range.lowerBound)
  }

  private func pick<T>(_ items: [T]) -> T { items[Int(rng.next() % UInt64(items.count))] }

  private func note(_ text: String) {
    let elapsed = ContinuousClock.now - start
    let line = String(
      format: "%7.2fs %@",
      Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18, text)
    log.append(line)
    onNote(line)
  }

  /// Runs faults until `deadline`, each healed before the next begins.
  func run(until deadline: ContinuousClock.Instant) async {
    guard !kinds.isEmpty else { return }
    while ContinuousClock.now + .seconds(holdSeconds.upperBound + gapSeconds.upperBound) < deadline {
      try? await Task.sleep(for: .seconds(uniform(gapSeconds)))
      let kind = pick(kinds)
      counts[kind, default: 0] += 1
      await inject(kind)
    }
  }

  private func victim() async -> String {
    if rng.next() % 10 < 6, let leader = await cluster.leader() { return leader }
    return pick(cluster.names.filter { cluster.isRunning($0) })
  }

  private func inject(_ kind: FaultKind) async {
    let hold = Duration.seconds(uniform(holdSeconds))
    switch kind {
    case .kill:
      let name = await victim()
      note("kill -9 \(name)")
      cluster.kill(name)
      try? await Task.sleep(for: hold)
      note("restart \(name)")
      try? cluster.restart(name)
    case .pause:
      let name = await victim()
      note("pause (SIGSTOP) \(name)")
      cluster.pause(name)
      try? await Task.sleep(for: hold)
      note("resume (SIGCONT) \(name)")
      cluster.resume(name)
    case .partition:
      let (description, links) = await partition()
      note("partition: \(description)")
      cluster.proxy.setBlocked(links)
      try? await Task.sleep(for: hold)
      note("partition healed")
      cluster.proxy.setBlocked([])
    case .membership:
      let members = cluster.names
      let name = pick(members)
      note("remove member \(name)")
      do {
        try await cluster.removeMember(name)
        try? await Task.sleep(for: hold)
        note("add \(name) back")
        try await cluster.addMemberBack(name)
        note("\(name) is a voter again")
      } catch {
        note("membership change failed: \(error)")
        try? await cluster.addMemberBack(name)
      }
    case .crashAll:
      note("kill -9 every node")
      for name in cluster.names { cluster.kill(name) }
      try? await Task.sleep(for: .seconds(uniform(0.5...1.5)))
      note("restart every node")
      for name in cluster.names { try? cluster.restart(name) }
    }
  }

  /// A partition shape and the directed links it cuts.
  private func partition() async -> (String, Set<Link>) {
    let specs = cluster.specs
    let ids = specs.map(\.id)
    func cut(_ a: [UInt64], _ b: [UInt64]) -> Set<Link> {
      var links: Set<Link> = []
      for x in a { for y in b { links.insert(Link(from: x, to: y)); links.insert(Link(from: y, to: x)) } }
      return links
    }
    let leader = await cluster.leader()
    switch rng.next() % 4 {
    case 0:
      let isolated = leader.map { cluster.node($0) } ?? pick(specs)
      return ("isolate \(isolated.name)", cut([isolated.id], ids.filter { $0 != isolated.id }))
    case 1:
      var shuffled = specs
      for i in stride(from: shuffled.count - 1, to: 0, by: -1) {
        shuffled.swapAt(i, Int(rng.next() % UInt64(i + 1)))
      }
      let minority = Array(shuffled.prefix((specs.count - 1) / 2))
      let majority = shuffled.dropFirst(minority.count)
      return (
        "majority \(majority.map(\.name)) | minority \(minority.map(\.name))",
        cut(minority.map(\.id), majority.map(\.id))
      )
    case 2:
      let from = leader.map { cluster.node($0) } ?? pick(specs)
      let targets = specs.filter { $0.id != from.id }
      return (
        "one-way: \(from.name) cannot reach the others", Set(targets.map { Link(from: from.id, to: $0.id) })
      )
    default:
      let bridge = leader.map { cluster.node($0) } ?? pick(specs)
      let others = specs.filter { $0.id != bridge.id }
      let half = others.count / 2
      let left = Array(others.prefix(max(1, half)))
      let right = Array(others.dropFirst(max(1, half)))
      return (
        "bridge \(bridge.name) between \(left.map(\.name)) and \(right.map(\.name))",
        cut(left.map(\.id), right.map(\.id))
      )
    }
  }

  /// Undoes everything: network healed, paused nodes resumed, dead nodes restarted.
  func healAll() {
    cluster.proxy.setBlocked([])
    for name in cluster.names {
      if cluster.isPaused(name) { cluster.resume(name) }
      if !cluster.isRunning(name) { try? cluster.restart(name) }
    }
    note("healed everything")
  }
}
