import Foundation
import Logging
import Raft
import RaftDBAPI
import RaftDBClient
import RaftDBService
import RaftStorage

/// What a joining node learns from its seed's `/status`: the cluster it is about to join and the
/// members it may trust until the configuration reaches it.
struct SeedView: Sendable {
  /// The seed's cluster id (0: it knows none); nil when its `/status` has no `cluster_id`, that is
  /// a build before cluster ids, whose leader takes no `member_id` in a join.
  var clusterID: UInt64?
  var members: [(name: String, id: NodeID)]

  init(clusterID: UInt64?, members: [(name: String, id: NodeID)]) {
    self.clusterID = clusterID
    self.members = members
  }

  init(_ status: NodeStatus) {
    clusterID = status.clusterID.flatMap(HexID.parse)
    members = status.members.map {
      ($0.id, $0.memberID.flatMap { NodeID(hex: $0) } ?? MemberInfo.legacyNodeID(forName: $0.id))
    }
  }
}

/// Who a node is, decided once per data directory (docs/DESIGN.md, "Identity"):
///
/// - A directory that names an owner (its `identity`, or the `node-name` of older builds) belongs
///   to that name only.
/// - A directory with Raft state keeps its identity. One from before identities (`node-name` and
///   no `identity`) keeps the member id its build used, the legacy hash of its name, and has no
///   cluster id. State with neither file is refused: no build leaves that, and guessing an id
///   could make the node someone else.
/// - A node that bootstraps a cluster gives it a new random cluster id (always new: a directory
///   without state has promised nothing to anyone, even if an interrupted join named a cluster in
///   it), and keeps a member id it already had or draws a random one.
/// - A node that joins keeps a member id it already had (a restart part way through a join must
///   ask again as the same member) or draws a random one, and takes the seed's cluster id unless it
///   knows one. A seed of a build before member ids gets the legacy id: that is the id its leader
///   gives a join, since it takes no `member_id`.
enum IdentityChoice {
  struct Choice: Equatable {
    var identity: NodeIdentity
    /// How it was chosen, for the log.
    var how: String
  }

  static func choose(
    name: String, directory: String, stored: NodeIdentity?, legacyOwner: String?, hasState: Bool,
    joining: Bool, seed: () async throws -> SeedView,
    random: () -> UInt64 = { UInt64.random(in: 1...UInt64.max) }
  ) async throws -> Choice {
    if let owner = stored?.name ?? legacyOwner, owner != name {
      throw StartupError.wrongNode(directory: directory, owner: owner, requested: name)
    }
    let legacyID = MemberInfo.legacyNodeID(forName: name)
    if let stored, hasState { return Choice(identity: stored, how: "from the data directory") }
    if hasState && legacyOwner == nil { throw StartupError.missingIdentity(directory: directory) }
    if hasState || (stored == nil && legacyOwner != nil) {
      let legacy = NodeIdentity(name: name, memberID: legacyID, clusterID: 0)
      if hasState {
        return Choice(
          identity: legacy,
          how:
            "a data directory from before member ids: its member id is the hash of its name, its cluster id unknown"
        )
      }
      return try await choose(
        name: name, directory: directory, stored: legacy, legacyOwner: nil, hasState: false,
        joining: joining, seed: seed, random: random)
    }
    if !joining {
      let memberID = stored?.memberID ?? NodeID(random())
      return Choice(
        identity: NodeIdentity(name: name, memberID: memberID, clusterID: random()),
        how: "bootstrapping a new cluster")
    }
    if let stored, stored.clusterID != 0 {
      return Choice(identity: stored, how: "resuming a join")
    }
    let view = try await seed()
    let memberID = stored?.memberID ?? (view.clusterID == nil ? legacyID : NodeID(random()))
    return Choice(
      identity: NodeIdentity(name: name, memberID: memberID, clusterID: view.clusterID ?? 0),
      how: stored == nil ? "joining" : "resuming a join")
  }
}

extension RaftDBNode {
  /// Reads, or chooses and durably records, who this node is; before the core exists, so that
  /// its member id is final, and before a join is asked for, so that a restart asks as the same
  /// member. A joining node that does not know its cluster yet asks the seed first (retrying until
  /// it answers), so that the transport knows the cluster id before its first connection.
  static func establishIdentity(
    options: ServerOptions, storage: FileStorage, hasState: Bool, logger: Logger
  ) async throws -> NodeIdentity {
    let stored = try storage.readIdentity()
    let choice = try await IdentityChoice.choose(
      name: options.name, directory: options.dataDirectory, stored: stored,
      legacyOwner: try storage.legacyOwner(), hasState: hasState,
      joining: options.join != nil && !hasState,
      seed: { await askSeed(options.join ?? "", logger: logger) })
    if choice.identity != stored {
      // fsynced (file and directory) before the node proposes, votes or asks to join as this member.
      try storage.writeIdentity(choice.identity)
    }
    logger.info(
      "identity: \(choice.how)",
      metadata: [
        "member_id": "\(choice.identity.memberID.hex)",
        "cluster_id": "\(clusterText(choice.identity.clusterID))",
      ])
    return choice.identity
  }

  static func clusterText(_ clusterID: UInt64) -> String {
    clusterID == 0 ? "unknown" : HexID.format(clusterID)
  }

  private static func askSeed(_ seed: String, logger: Logger) async -> SeedView {
    let client = RaftDBClient(endpoints: [seed])
    let view = await retrying("asking \(seed) which cluster it belongs to", logger: logger) { _ in
      SeedView(try await client.status())
    }
    await client.close()
    guard let view else { preconditionFailure("retrying stops only when running turns false") }
    return view
  }

  /// Runs `attempt` until it succeeds, with back-off from 200 ms to 5 s and a warning per failure;
  /// nil once `running` turns false.
  static func retrying<T: Sendable>(
    _ what: String, logger: Logger, running: () async -> Bool = { true },
    _ attempt: (_ number: Int) async throws -> T
  ) async -> T? {
    var delay = Duration.milliseconds(200)
    var number = 0
    while await running() {
      number += 1
      do {
        return try await attempt(number)
      } catch {
        logger.warning("\(what) failed (attempt \(number)): \(error); retrying in \(delay)")
        try? await Task.sleep(for: delay)
        delay = min(delay * 2, .seconds(5))
      }
    }
    return nil
  }

  // MARK: Names for people

  /// How log lines and errors name a member: its name from the configuration, or from what this
  /// node has seen, else its member id in hex. On the node's loop.
  func name(of member: NodeID) -> String {
    raft.configuration.info(of: member)?.name ?? knownNames[member] ?? "member \(member.hex)"
  }

  /// Remembers the configuration's names and hands them to the transport (for its log lines).
  func publishNames() {
    for member in raft.configuration.members {
      if let info = MemberInfo(decoding: member.context) { knownNames[member.id] = info.name }
    }
    transport.setNames(knownNames)
  }

  func describe(_ change: ConfigurationChange) -> String {
    let who = MemberInfo(decoding: change.context)?.name ?? name(of: change.node)
    let action =
      switch change.kind {
      case .addVoter: "add voter"
      case .addLearner: "add learner"
      case .promoteLearner: "promote"
      case .removeMember: "remove"
      }
    return "\(action) \(who) (member \(change.node.hex))"
  }

  func describe(_ error: ConfigurationChangeError) -> String { error.description(naming: name(of:)) }

}
