import Foundation
import NIOHTTP1
import RaftDBClient
import Testing

/// A real mixed-version cluster: one member stands in for an older build that supports cluster
/// version 1 only (`RAFTDB_TEST_SUPPORTED_CLUSTER_VERSION=1`: it says so on `GET /version` and
/// rejects the newer commands as that build's decoder does). Compare-and-delete needs version 2: it
/// is refused at the proposing node while that member runs, the cluster version rises through the
/// log once it is upgraded, and then the command applies on every member. A join of an older build
/// is refused afterwards.
@Suite(.serialized) struct ClusterVersionTests {
  static let older = ["RAFTDB_TEST_SUPPORTED_CLUSTER_VERSION": "1"]

  func versions(_ harness: ClusterHarness, _ name: String) async -> (server: Int, cluster: Int)? {
    guard let response = try? await harness.request(name, .GET, "/version"), response.status == .ok,
      let object = (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any],
      let server = object["server"] as? Int, let cluster = object["cluster"] as? Int
    else { return nil }
    return (server, cluster)
  }

  func compareAndDelete(_ harness: ClusterHarness, via name: String) async throws -> HTTPResponseData {
    try await harness.request(name, .POST, "/key/lock/cas", body: #"{"expect": "holder", "value": null}"#)
  }

  @Test func aNewerCommandWaitsUntilEveryMemberRunsABuildThatSupportsIt() async throws {
    let harness = try ClusterHarness()
    let names = ["node01", "node02", "node03"]
    for name in names { harness.addNode(name) }
    // The bootstrapping member is the older one, so that the cluster version cannot rise before
    // the others join.
    try harness.start("node01", environment: Self.older)
    #expect(await harness.waitForLeader(among: ["node01"]) != nil)
    for name in names.dropFirst() { try harness.start(name, join: harness.spec("node01").http) }
    let formed = await harness.eventually {
      let members = await harness.status("node01")?["members"] as? [[String: Any]] ?? []
      return members.filter { $0["voter"] as? Bool == true }.count == 3
    }
    try #require(formed, "cluster did not form:\n\(harness.log("node03"))")
    let client = harness.client()
    try await client.put(["lock": "holder"])

    // Several monitor rounds (every 2 s) later the cluster still runs version 1.
    try await Task.sleep(for: .seconds(5))
    for name in names {
      let expected = name == "node01" ? 1 : 3
      let seen = await versions(harness, name)
      #expect(seen?.server == expected && seen?.cluster == 1, "\(name): \(String(describing: seen))")
    }
    let leader = try #require(await harness.waitForLeader())
    // A follower sends it to the leader (307), which refuses it: the gate is the leader's.
    let follower = try #require(names.first { $0 != leader })
    let redirected = try await compareAndDelete(harness, via: follower)
    #expect(redirected.status == .temporaryRedirect, "\(redirected.bodyText)")
    let refused = try await compareAndDelete(harness, via: leader)
    #expect(refused.status == .conflict, "\(refused.bodyText)")
    #expect(refused.bodyText.contains("needs cluster version 2"), "\(refused.bodyText)")
    for name in names {
      let value = try await harness.request(name, .GET, "/key/lock?level=stale")
      #expect(value.status == .ok, "\(name) still holds the key")
    }

    // Upgrade the older member: same data directory, this build. The leader sees every member
    // support version 2 and raises the cluster's through the log.
    harness.kill("node01")
    try harness.start("node01")
    let raised = await harness.eventually(timeout: .seconds(30)) {
      for name in names where await versions(harness, name)?.cluster != 3 { return false }
      return true
    }
    try #require(raised, "the cluster version did not rise:\n\(harness.log("node02"))")
    let newLeader = try #require(await harness.waitForLeader())
    let released = try await compareAndDelete(harness, via: newLeader)
    #expect(released.status == .ok, "\(released.bodyText)")
    #expect(released.bodyText.contains(#""succeeded":true"#), "\(released.bodyText)")
    let goneEverywhere = await harness.eventually {
      for name in names
      where (try? await harness.request(name, .GET, "/key/lock?level=stale"))?.status != .notFound {
        return false
      }
      return true
    }
    #expect(goneEverywhere, "every member applied the compare-and-delete")

    // A join of an older build is refused with the reason (the leader asks the joiner's /version).
    let joiner = harness.addNode("node04")
    try harness.start("node04", environment: Self.older)
    let refusedJoin = await harness.eventually(timeout: .seconds(20)) {
      guard
        let response = try? await harness.request(
          newLeader, .POST, "/join",
          body: #"{"id": "node04", "addr": "\#(joiner.raft)", "haddr": "\#(joiner.http)"}"#)
      else { return false }
      return response.status == .conflict && response.bodyText.contains("upgrade it before it joins")
    }
    #expect(refusedJoin, "an older build is not let in")
    await client.close()
    harness.stopAll()
  }
}
