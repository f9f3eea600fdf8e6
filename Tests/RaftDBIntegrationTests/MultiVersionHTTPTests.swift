import Foundation
import Testing

/// The multi-version HTTP routes on a real three-node cluster: prefix ranges, reads of the past,
/// transactions, compaction and leases whose expiry the leader decides and every member applies.
@Suite(.serialized) struct MultiVersionHTTPTests {
  static func json(_ text: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
  }

  /// Waits for the cluster version the multi-version routes need.
  static func waitForVersion3(_ harness: ClusterHarness, _ names: [String]) async -> Bool {
    await harness.waitForClusterVersion(3, among: names)
  }

  @Test func rangesTransactionsAndCompaction() async throws {
    let harness = try ClusterHarness()
    let names = ["node01", "node02", "node03"]
    let leader = try await harness.startCluster(names)
    try #require(await Self.waitForVersion3(harness, names), "\(harness.log(leader))")
    for i in 0..<12 {
      let key = String(format: "services/web/%02d", i)
      let put = try await harness.request(leader, .POST, "/key", body: #"{"\#(key)": "10.0.0.\#(i)"}"#)
      #expect(put.status == .ok, "\(put.bodyText)")
    }
    _ = try await harness.request(leader, .POST, "/key", body: #"{"services/x": "outside"}"#)

    // A prefix range with a limit: the first keys in byte order, the count of all, and more.
    let page = try await harness.request(
      leader, .GET, "/key/services/web/?prefix=true&limit=5&level=consistent")
    #expect(page.status == .ok, "\(page.bodyText)")
    let body = Self.json(page.bodyText)
    let kvs = body["kvs"] as? [[String: Any]] ?? []
    #expect(kvs.map { $0["key"] as? String ?? "" } == (0..<5).map { String(format: "services/web/%02d", $0) })
    #expect(body["count"] as? Int == 12 && body["more"] as? Bool == true, "\(page.bodyText)")
    #expect(kvs.first?["create_revision"] as? Int == 1 && kvs.first?["version"] as? Int == 1)
    // Every member answers a stale range from its own store alike once it has applied.
    let agreed = await harness.eventually {
      for name in names {
        let stale = try? await harness.request(
          name, .GET, "/key/services/?prefix=true&level=stale&count_only=true")
        if Self.json(stale?.bodyText ?? "")["count"] as? Int != 13 { return false }
      }
      return true
    }
    #expect(agreed, "every member lists the 13 keys")
    // Misspelt options are refused, not ignored.
    let misspelt = try await harness.request(leader, .GET, "/key/services/?prefx=true")
    #expect(misspelt.status == .badRequest && misspelt.bodyText.contains("prefx"), "\(misspelt.bodyText)")

    // The past: revision 1 holds only the first key's first value.
    _ = try await harness.request(leader, .POST, "/key", body: #"{"services/web/00": "moved"}"#)
    let past = try await harness.request(leader, .GET, "/key/services/web/00?revision=1&level=consistent")
    #expect(
      Self.json(past.bodyText)["kvs"].flatMap { ($0 as? [[String: Any]])?.first?["value"] as? String }
        == "10.0.0.0")

    // A transaction through a follower is sent to the leader; its branches see the compares.
    let follower = try #require(names.first { $0 != leader })
    let txnBody = #"""
      {"compare": [{"key": "services/web/00", "target": "value", "result": "=", "value": "moved"}],
       "success": [{"put": {"key": "lock/a", "value": "me"}}, {"delete": {"key": "services/web/", "prefix": true}}],
       "failure": [{"get": {"key": "lock/a"}}]}
      """#
    let redirected = try await harness.request(follower, .POST, "/txn", body: txnBody)
    #expect(redirected.status == .temporaryRedirect, "\(redirected.bodyText)")
    let txn = try await harness.request(leader, .POST, "/txn", body: txnBody)
    let outcome = Self.json(txn.bodyText)
    #expect(outcome["succeeded"] as? Bool == true, "\(txn.bodyText)")
    let deleted =
      ((outcome["responses"] as? [[String: Any]])?.last?["delete"] as? [String: Any])?["deleted"] as? Int
    #expect(deleted == 12, "\(txn.bodyText)")
    let again = Self.json(try await harness.request(leader, .POST, "/txn", body: txnBody).bodyText)
    #expect(again["succeeded"] as? Bool == false, "the compare now fails")
    let duplicate = try await harness.request(
      leader, .POST, "/txn",
      body: #"{"success": [{"put": {"key": "d", "value": "1"}}, {"put": {"key": "d", "value": "2"}}]}"#)
    #expect(
      duplicate.status == .badRequest && duplicate.bodyText.contains("duplicate key"), "\(duplicate.bodyText)"
    )

    // Compaction: the past below it is gone, with the revision to start again from.
    let compacted = try await harness.request(leader, .POST, "/compact", body: #"{"revision": 10}"#)
    #expect(compacted.status == .ok, "\(compacted.bodyText)")
    let gone = try await harness.request(leader, .GET, "/key/services/web/00?revision=5&level=consistent")
    #expect(
      gone.status == .badRequest && gone.bodyText.contains(#""compact_revision":10"#), "\(gone.bodyText)")
    let future = try await harness.request(leader, .GET, "/key/lock/a?revision=100000&level=consistent")
    #expect(future.bodyText.contains("future revision"), "\(future.bodyText)")
    harness.stopAll()
  }

  /// A lease kept alive outlives its TTL and a leader's death; once its keep-alives stop, the
  /// leader revokes it and every member deletes its key at the same revision.
  @Test func leasesExpireOnTheLeadersClockAndSurviveAnElection() async throws {
    let harness = try ClusterHarness()
    let names = ["node01", "node02", "node03"]
    var leader = try await harness.startCluster(names)
    try #require(await Self.waitForVersion3(harness, names), "\(harness.log(leader))")
    let granted = Self.json(
      try await harness.request(leader, .POST, "/lease", body: #"{"ttl": 10}"#).bodyText)
    let id = try #require(granted["id"] as? Int, "\(granted)")
    #expect(granted["ttl"] as? Int == 10)
    let put = try await harness.request(leader, .POST, "/key?lease=\(id)", body: #"{"svc/a": "10.0.0.1"}"#)
    #expect(put.status == .ok, "\(put.bodyText)")
    let ttl = Self.json(try await harness.request(leader, .GET, "/lease/\(id)").bodyText)
    #expect(ttl["keys"] as? [String] == ["svc/a"], "\(ttl)")

    // Kept alive across 14 s (longer than its TTL), with the leader killed early on. The TTL is
    // generous so that a starved test machine cannot make a keep-alive miss it honestly.
    let started = ContinuousClock.now
    var killed = false
    while ContinuousClock.now - started < .seconds(14) {
      if !killed && ContinuousClock.now - started > .seconds(3) {
        harness.kill(leader)
        killed = true
        leader = try #require(await harness.waitForLeader(among: names.filter { $0 != leader }))
      }
      let renewed = try? await harness.request(leader, .POST, "/lease/\(id)/keepalive")
      if let renewed { #expect(renewed.status == .ok, "keep-alive: \(renewed.bodyText)") }
      let alive = try await harness.request(leader, .GET, "/key/svc/a?level=consistent")
      #expect(alive.status == .ok, "the key must not expire while kept alive: \(alive.bodyText)")
      try await Task.sleep(for: .milliseconds(500))
    }
    // No more keep-alives: within its TTL plus a sweep, the key is gone on both live members.
    let living = names.filter { harness.isRunning($0) }
    let expired = await harness.eventually(timeout: .seconds(40)) {
      for name in living
      where (try? await harness.request(name, .GET, "/key/svc/a?level=stale"))?.status != .notFound {
        return false
      }
      return true
    }
    #expect(expired, "the lease expired and its key was deleted everywhere:\n\(harness.log(leader))")
    let afterwards = try await harness.request(leader, .GET, "/lease/\(id)")
    #expect(afterwards.status == .notFound, "\(afterwards.bodyText)")
    // The delete has the same revision on every live member.
    var revisions: Set<String> = []
    for name in living {
      let status = try await harness.request(name, .GET, "/key/svc/?prefix=true&level=stale")
      revisions.insert(status.headers.first(name: "X-Raftdb-Revision") ?? "")
    }
    #expect(revisions.count == 1, "members agree on the store revision: \(revisions)")
    harness.stopAll()
  }

  /// An answer larger than -max-response-bytes is refused with 413 and says how to page.
  @Test func largeAnswersAreRefused() async throws {
    let harness = try ClusterHarness(extraArguments: ["-max-response-bytes", "2000"])
    let leader = try await harness.startCluster(["node01"])
    try #require(await Self.waitForVersion3(harness, ["node01"]))
    let value = String(repeating: "v", count: 100)
    for i in 0..<40 {
      _ = try await harness.request(leader, .POST, "/key", body: #"{"big/\#(i)": "\#(value)"}"#)
    }
    let all = try await harness.request(leader, .GET, "/key/big/?prefix=true")
    #expect(all.status == .payloadTooLarge && all.bodyText.contains("limit"), "\(all.bodyText)")
    let page = try await harness.request(leader, .GET, "/key/big/?prefix=true&limit=10")
    #expect(page.status == .ok, "\(page.bodyText)")
    let keysOnly = try await harness.request(leader, .GET, "/key/big/?prefix=true&keys_only=true")
    #expect(keysOnly.status == .ok, "keys alone fit: \(keysOnly.bodyText)")
    let txn = try await harness.request(
      leader, .POST, "/txn", body: #"{"success": [{"get": {"key": "big/", "prefix": true}}]}"#)
    #expect(txn.status == .payloadTooLarge && txn.bodyText.contains("applied"), "\(txn.bodyText)")
  }
}
