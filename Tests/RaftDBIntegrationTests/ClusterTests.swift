import Foundation
import NIOHTTP1
import RaftDBClient
import Testing

/// Three real raftdb processes on loopback, driven over HTTP as a user would with curl.
@Suite(.serialized) struct ClusterTests {
  func json(_ response: HTTPResponseData) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any] ?? [:]
  }

  func follower(of leader: String, in harness: ClusterHarness) -> String {
    harness.nodes.map(\.name).first { $0 != leader && harness.isRunning($0) }!
  }

  /// Lesson 20: a write sent to a follower answers 307 with the leader's address, and following it
  /// commits the write.
  @Test func writeToAFollowerIsRedirectedToTheLeaderAndCommitted() async throws {
    let harness = try ClusterHarness()
    let leader = try await harness.startCluster(["node01", "node02", "node03"])
    let follower = follower(of: leader, in: harness)

    let redirected = try await harness.request(follower, .POST, "/key", body: #"{"foo": "bar"}"#)
    #expect(redirected.status == .temporaryRedirect)
    #expect(redirected.headers.first(name: "Location") == "http://\(harness.spec(leader).http)/key")

    let client = RaftDBClient(endpoints: [harness.spec(follower).http], group: ClusterHarness.group)
    try await client.put(["foo": "bar"])
    #expect(try await client.get("foo", level: .consistent) == "bar")
    await client.close()
    harness.stopAll()
  }

  /// `POST /transfer` hands leadership to the named member, or with no body to the most
  /// caught-up voter, answers once it has taken over, and writes go on at the new leader. A
  /// follower redirects the request to the leader; an unknown name is a 404.
  @Test func leadershipMovesOnRequest() async throws {
    let harness = try ClusterHarness()
    let leader = try await harness.startCluster(["node01", "node02", "node03"])
    let target = follower(of: leader, in: harness)

    let redirected = try await harness.request(
      target, .POST, "/transfer", body: #"{"id": "\#(target)"}"#)
    #expect(redirected.status == .temporaryRedirect)
    let unknown = try await harness.request(leader, .POST, "/transfer", body: #"{"id": "nobody"}"#)
    #expect(unknown.status == .notFound, "\(unknown.bodyText)")

    let moved = try await harness.request(
      leader, .POST, "/transfer", body: #"{"id": "\#(target)"}"#)
    #expect(moved.status == .ok, "\(moved.bodyText)")
    #expect(json(moved)["leader"] as? String == target)
    #expect(await harness.waitForLeader() == target)

    // No body: to whichever voter is most caught up, which is not the old leader.
    let again = try await harness.request(target, .POST, "/transfer")
    #expect(again.status == .ok, "\(again.bodyText)")
    let third = try #require(json(again)["leader"] as? String)
    #expect(third != target)
    #expect(await harness.waitForLeader() == third)

    let client = harness.client()
    // What `raftctl transfer` calls: through any member, redirected to the leader.
    let fourth = try await client.transferLeadership(to: nil)
    #expect(fourth != third)
    #expect(await harness.waitForLeader() == fourth)
    try await client.put(["after": "transfer"])
    #expect(try await client.get("after", level: .consistent) == "transfer")
    await client.close()
    harness.stopAll()
  }

  /// Every read level behaves as docs/API.md says.
  @Test func readLevelsBehaveAsDocumented() async throws {
    let harness = try ClusterHarness()
    let leader = try await harness.startCluster(["node01", "node02", "node03"])
    let follower = follower(of: leader, in: harness)
    let client = harness.client()
    try await client.put(["x": "1"])

    // stale: any node answers from its own state (the follower has it once replicated).
    let staleOnFollower = await harness.eventually {
      (try? await harness.request(follower, .GET, "/key/x?level=stale")).map { self.json($0)["x"] as? String }
        == "1"
    }
    #expect(staleOnFollower)
    // default and consistent (and its synonym) on a follower redirect to the leader, same query.
    for level in ["default", "consistent", "linearizable"] {
      let response = try await harness.request(follower, .GET, "/key/x?level=\(level)")
      #expect(response.status == .temporaryRedirect, "level \(level)")
      #expect(
        response.headers.first(name: "Location") == "http://\(harness.spec(leader).http)/key/x?level=\(level)"
      )
    }
    let noLevel = try await harness.request(follower, .GET, "/key/x")
    #expect(noLevel.status == .temporaryRedirect)
    // On the leader every level answers.
    for level in ["stale", "default", "consistent", "linearizable"] {
      let response = try await harness.request(leader, .GET, "/key/x?level=\(level)")
      #expect(response.status == .ok, "level \(level)")
      #expect(json(response)["x"] as? String == "1")
    }
    let unknown = try await harness.request(leader, .GET, "/key/x?level=eventual")
    #expect(unknown.status == .badRequest && json(unknown)["error"] != nil)
    let missing = try await harness.request(leader, .GET, "/key/nothing?level=consistent")
    #expect(missing.status == .notFound && json(missing)["error"] != nil)
    await client.close()
    harness.stopAll()
  }

  /// kill -9 of the leader: the others elect a new one, and no acknowledged write is lost.
  @Test func killingTheLeaderElectsANewOneAndLosesNothing() async throws {
    let harness = try ClusterHarness()
    let leader = try await harness.startCluster(["node01", "node02", "node03"])
    let client = harness.client()
    var acknowledged: [String: String] = [:]
    for i in 0..<50 {
      try await client.put(["k\(i)": "v\(i)"])
      acknowledged["k\(i)"] = "v\(i)"
    }
    let killedAt = ContinuousClock.now
    harness.kill(leader)
    let survivors = harness.nodes.map(\.name).filter { $0 != leader }
    let newLeader = await harness.waitForLeader(among: survivors)
    let electionTime = ContinuousClock.now - killedAt
    print(
      "new leader \(newLeader ?? "none") elected \(electionTime) after kill -9 (election timeout 500–1000 ms)"
    )
    #expect(newLeader != nil)
    #expect(electionTime < .seconds(10))
    for (key, value) in acknowledged {
      #expect(try await client.get(key, level: .consistent) == value, "\(key)")
    }
    // The cluster still takes writes with one node down.
    try await client.put(["after": "kill"])
    #expect(try await client.get("after", level: .consistent) == "kill")
    await client.close()
    harness.stopAll()
  }

  /// A node that was down while the log was compacted catches up through a snapshot.
  @Test func restartedNodeCatchesUpThroughASnapshot() async throws {
    let harness = try ClusterHarness(extraArguments: ["-snapshot-threshold", "40", "-log-retain", "5"])
    let leader = try await harness.startCluster(["node01", "node02", "node03"])
    let lagging = follower(of: leader, in: harness)
    harness.kill(lagging)
    let client = harness.client()
    for i in 0..<300 { try await client.put(["s\(i % 50)": "v\(i)"]) }
    let leaderStatus = try #require(await harness.status(leader))
    #expect((leaderStatus["snapshot_index"] as? Int ?? 0) > 0, "the leader compacted its log")

    try harness.start(lagging)
    let caughtUp = await harness.eventually(timeout: .seconds(30)) {
      guard let status = await harness.status(lagging), let leaderNow = await harness.status(leader) else {
        return false
      }
      return (status["applied_index"] as? Int ?? 0) >= (leaderNow["commit_index"] as? Int ?? .max)
    }
    #expect(caughtUp)
    #expect(harness.log(lagging).contains("installed snapshot from the leader"))
    let value = try await harness.request(lagging, .GET, "/key/s49?level=stale")
    #expect(json(value)["s49"] as? String == "v299")
    await client.close()
    harness.stopAll()
  }

  /// A fourth node joins (as a learner first, then a voter) and is removed again.
  @Test func aFourthNodeJoinsAndIsRemoved() async throws {
    let harness = try ClusterHarness()
    let leader = try await harness.startCluster(["node01", "node02", "node03"])
    let client = harness.client()
    try await client.put(["before": "join"])
    harness.addNode("node04")
    try harness.start("node04", join: harness.spec(follower(of: leader, in: harness)).http)
    let joined = await harness.eventually {
      let members = await harness.status(leader)?["members"] as? [[String: Any]] ?? []
      return members.contains { $0["id"] as? String == "node04" && $0["voter"] as? Bool == true }
    }
    #expect(joined)
    let replicated = await harness.eventually {
      (try? await harness.request("node04", .GET, "/key/before?level=stale")).map {
        self.json($0)["before"] as? String
      }
        == "join"
    }
    #expect(replicated)

    try await client.remove(id: "node04")
    let removed = await harness.eventually {
      let members = await harness.status(leader)?["members"] as? [[String: Any]] ?? []
      return members.count == 3 && !members.contains { $0["id"] as? String == "node04" }
    }
    #expect(removed)
    try await client.put(["after": "remove"])
    #expect(try await client.get("after", level: .consistent) == "remove")
    await client.close()
    harness.stopAll()
  }

  /// An idempotent retry returns the original outcome and applies nothing twice (lesson 19).
  @Test func anIdempotentRetryAppliesOnce() async throws {
    let harness = try ClusterHarness()
    let leader = try await harness.startCluster(["node01", "node02", "node03"])
    let headers = [("Idempotency-Key", "retry-42")]
    let first = try await harness.request(leader, .POST, "/key", body: #"{"once": "1"}"#, headers: headers)
    let second = try await harness.request(leader, .POST, "/key", body: #"{"once": "1"}"#, headers: headers)
    #expect(first.status == .ok && second.status == .ok)
    let revision = json(first)["revision"] as? Int
    #expect(revision != nil && json(second)["revision"] as? Int == revision)
    #expect(second.headers.first(name: "Idempotent-Replayed") == "true")
    let next = try await harness.request(leader, .POST, "/key", body: #"{"other": "2"}"#)
    #expect(json(next)["revision"] as? Int == revision.map { $0 + 1 }, "the retry did not consume a revision")
    // A CAS retried with its key does not flip to "failed" on the retry.
    let casHeaders = [("Idempotency-Key", "cas-7")]
    let cas1 = try await harness.request(
      leader, .POST, "/key/lock/cas", body: #"{"expect": null, "value": "me"}"#, headers: casHeaders)
    let cas2 = try await harness.request(
      leader, .POST, "/key/lock/cas", body: #"{"expect": null, "value": "me"}"#, headers: casHeaders)
    #expect(json(cas1)["succeeded"] as? Bool == true && json(cas2)["succeeded"] as? Bool == true)
    harness.stopAll()
  }

  /// SIGTERM stops a node gracefully (exit status 0), and it comes back with its data.
  @Test func sigtermShutsDownCleanlyAndDataSurvives() async throws {
    let harness = try ClusterHarness()
    _ = try await harness.startCluster(["solo"])
    let client = harness.client()
    try await client.put(["kept": "yes"])
    await client.close()
    #expect(harness.terminate("solo") == 0)
    #expect(harness.log("solo").contains("raftdb stopped"))
    try harness.start("solo")
    #expect(await harness.waitForLeader(among: ["solo"]) != nil)
    let after = harness.client()
    #expect(try await after.get("kept", level: .consistent) == "yes")
    await after.close()
    harness.stopAll()
  }

  /// kill -9 of every node at once, then a restart of all: nothing acknowledged is lost.
  @Test func killingEveryNodeLosesNothingAcknowledged() async throws {
    let harness = try ClusterHarness()
    _ = try await harness.startCluster(["node01", "node02", "node03"])
    let client = harness.client()
    for i in 0..<100 { try await client.put(["d\(i)": "v\(i)"]) }
    await client.close()
    for node in harness.nodes { harness.kill(node.name) }
    for node in harness.nodes { try harness.start(node.name) }
    #expect(await harness.waitForLeader() != nil)
    let after = harness.client()
    for i in 0..<100 {
      #expect(try await after.get("d\(i)", level: .consistent) == "v\(i)", "d\(i)")
    }
    await after.close()
    harness.stopAll()
  }
}
