import Foundation
import Raft
import RaftDBClient
import RaftDBServer
import RaftDBService
import RaftStorage
import Testing

/// Cluster and member identity with real processes: two clusters with the same node names on one
/// machine keep apart, a directory from before identities keeps working, and a join interrupted by
/// a restart asks again as the same member. (A harness kills its processes when it goes away.)
@Suite(.serialized) struct IdentityTests {
  static let names = ["node01", "node02", "node03"]

  static func stale(_ harness: ClusterHarness, _ node: String, _ key: String) async -> String? {
    guard let response = try? await harness.request(node, .GET, "/key/\(key)?level=stale"),
      response.status == .ok
    else { return nil }
    return (try? JSONSerialization.jsonObject(with: Data(response.body)) as? [String: String])?[key]
  }

  static func field(_ harness: ClusterHarness, _ node: String, _ name: String) async -> String? {
    await harness.status(node)?[name] as? String
  }

  /// Clusters A and B both name their nodes node01…node03. Under name-hash ids each cluster's
  /// members were the other's, so a stale address was enough for A's leader to feed B's node its
  /// log. Here A's follower stops and B's node of the same name takes its raft address: A's leader
  /// keeps dialling it and is refused as another cluster's (counted and logged on B's node, which
  /// names A's cluster; logged by A's leader, which then sends it nothing), both clusters keep
  /// their own data, and A keeps committing with the quorum it has left. When A's node comes back
  /// to its address, A's leader sends to it again and it catches up.
  @Test func twoClustersWithTheSameNamesRefuseEachOther() async throws {
    let a = try ClusterHarness()
    let b = try ClusterHarness()
    let leaderA = try await a.startCluster(Self.names)
    let leaderB = try await b.startCluster(Self.names)
    let (idA, idB) = (try await a.memberIDs(), try await b.memberIDs())
    let clusterA = try #require(await Self.field(a, leaderA, "cluster_id"))
    let clusterB = try #require(await Self.field(b, leaderB, "cluster_id"))
    #expect(clusterA != clusterB)
    #expect(![clusterA, clusterB].contains("0000000000000000"))
    for name in Self.names {
      // The same name meant the same id before; now every member drew its own.
      #expect(idA(name) != idB(name), "\(name)")
      #expect(idA(name) != MemberInfo.legacyNodeID(forName: name))
    }

    let (clientA, clientB) = (a.client(), b.client())
    defer {
      Task {
        await clientA.close()
        await clientB.close()
      }
    }
    try await clientA.put(["owner": "A"])
    try await clientB.put(["owner": "B"])
    // A node that leads neither cluster (of three names, at least one).
    let moved = try #require(Self.names.first { $0 != leaderA && $0 != leaderB })
    #expect(await b.eventually { await Self.stale(b, moved, "owner") == "B" })

    a.kill(moved)
    b.kill(moved)
    try b.start(moved, arguments: ["-raft-listen", a.spec(moved).raft])
    let refused = await b.eventually(timeout: .seconds(30)) {
      await b.metric("raftdb_peer_connections_refused_total", moved, labels: #"reason="wrong_cluster""#) >= 1
    }
    #expect(refused, "B's \(moved) did not refuse A's leader:\n\(b.log(moved).suffix(3000))")
    #expect(b.log(moved).contains("refused a peer connection"))
    #expect(b.log(moved).contains("belongs to cluster \(clusterA), this node to cluster \(clusterB)"))
    let warned = await a.eventually(timeout: .seconds(30)) {
      a.log(leaderA).contains(
        "\(moved) at \(a.spec(moved).raft) refused this node: it belongs to cluster \(clusterB)")
    }
    #expect(warned, "A's leader did not say why:\n\(a.log(leaderA).suffix(3000))")

    // A commits with its two remaining members and reads its own value; so does B.
    try await clientA.put(["owner": "A2", "only-in-A": "yes"])
    #expect(try await clientA.get("owner", level: .consistent) == "A2")
    try await clientB.put(["owner": "B2"])
    #expect(try await clientB.get("owner", level: .consistent) == "B2")
    // B's node at A's address holds B's data only.
    #expect(await Self.stale(b, moved, "owner") == "B")
    #expect(await Self.stale(b, moved, "only-in-A") == nil)
    #expect(await a.waitForLeader(among: Self.names.filter { $0 != moved }) == leaderA)

    // A's node comes back at its address: A's leader accepts the answer, resumes, catches it up.
    b.kill(moved)
    try a.start(moved)
    #expect(await a.eventually(timeout: .seconds(30)) { await Self.stale(a, moved, "only-in-A") == "yes" })
    #expect(a.log(leaderA).contains("\(moved) at \(a.spec(moved).raft) accepts this node again"))
    #expect(await Self.stale(a, moved, "owner") == "A2")
    #expect(
      await b.metric("raftdb_peer_connections_refused_total", leaderB, labels: #"reason="wrong_cluster""#)
        == 0)
  }

  /// A data directory of a build before identities: `node-name`, and a log whose configuration
  /// names the node by the hash of its name. It starts as before, keeps that member id and knows
  /// no cluster id; a node that joins it draws a random member id.
  @Test func aLegacyDataDirectoryKeepsWorking() async throws {
    let harness = try ClusterHarness()
    let spec = harness.addNode("node01")
    let legacyID = MemberInfo.legacyNodeID(forName: "node01")
    do {
      // What `raftdb -id node01` of such a build wrote on its first start.
      let storage = try FileStorage(directory: spec.directory.path)
      _ = try storage.recover()
      let info = MemberInfo(name: "node01", raftAddress: spec.raft, httpAddress: spec.http)
      let stored = RaftNode.bootstrap(
        Configuration(members: [Member(id: legacyID, isVoter: true, context: info.encoded())]))
      try storage.write(PersistBatch(entries: stored.entries, hardState: stored.hardState))
      try storage.sync()
      storage.close()
      try "node01\n".write(
        to: spec.directory.appendingPathComponent("node-name"), atomically: true, encoding: .utf8)
    }
    try harness.start("node01")
    #expect(await harness.waitForLeader(among: ["node01"]) == "node01")
    #expect(await Self.field(harness, "node01", "member_id") == legacyID.hex)
    #expect(await Self.field(harness, "node01", "cluster_id") == "0000000000000000")
    let client = harness.client()
    defer { Task { await client.close() } }
    try await client.put(["k": "v"])

    harness.addNode("node02")
    try harness.start("node02", join: spec.http)
    let joined = await harness.eventually(timeout: .seconds(30)) {
      let members = await harness.status("node01")?["members"] as? [[String: Any]] ?? []
      return members.filter { $0["voter"] as? Bool == true }.count == 2
    }
    #expect(joined, "\(harness.log("node02").suffix(3000))")
    let ids = try await harness.memberIDs()
    #expect(ids("node01") == legacyID)
    #expect(ids("node02") != MemberInfo.legacyNodeID(forName: "node02"))
    #expect(await Self.field(harness, "node02", "cluster_id") == "0000000000000000")
    #expect(await harness.eventually { await Self.stale(harness, "node02", "k") == "v" })

    // The identity is now on disk: a restart keeps it.
    harness.kill("node01")
    try harness.start("node01")
    #expect(await harness.waitForLeader() != nil)
    #expect(await Self.field(harness, "node01", "member_id") == legacyID.hex)
    #expect(try await client.get("k", level: .consistent) == "v")
  }

  /// A join that keeps failing (here the name is taken by another member: a directory replaced
  /// without removing the member first) asks again after a restart under the same member id.
  @Test func aRestartedJoinAsksAgainAsTheSameMember() async throws {
    let cluster = try ClusterHarness()
    let other = try ClusterHarness()
    _ = try await cluster.startCluster(["node01"])
    let taken = try await cluster.memberIDs()("node01")
    other.addNode("node01")
    try other.start("node01", join: cluster.spec("node01").http)
    let refusal = "the name node01 is taken by member \(taken.hex)"
    #expect(await other.eventually(timeout: .seconds(30)) { other.log("node01").contains(refusal) })
    let first = try #require(await Self.field(other, "node01", "member_id"))
    #expect(first != taken.hex)
    #expect(other.log("node01").contains("not \(first)"))

    other.kill("node01")
    try other.start("node01", join: cluster.spec("node01").http)
    #expect(await other.eventually { await Self.field(other, "node01", "member_id") != nil })
    #expect(await Self.field(other, "node01", "member_id") == first)
    #expect(other.log("node01").contains("identity: resuming a join"))
  }
}
