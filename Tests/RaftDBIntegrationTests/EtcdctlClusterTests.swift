import Foundation
import Testing

/// etcd's Cluster and Maintenance services on a real three-member cluster, through etcdctl 3.4:
/// member list, endpoint status and health (every member: followers forward linearizable reads),
/// writes through followers, hashkv (equal on every member), defrag, alarm list and move-leader.
@Suite(.serialized) struct EtcdctlClusterTests {
  @Test func membersStatusHashesAndLeadershipTransfer() async throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: EtcdctlKVTests.etcdctl.path),
      "run scripts/install-test-deps.sh")
    let harness = try ClusterHarness()
    defer { harness.stopAll() }
    let names = ["node01", "node02", "node03"]
    let leader = try await harness.startCluster(names)
    try #require(await MultiVersionHTTPTests.waitForVersion3(harness, names), "\(harness.log(leader))")
    let endpoints = names.map { harness.spec($0).http }
    let leaderNode = EtcdctlKVTests.Node(harness: harness, endpoint: harness.spec(leader).http)
    let all = EtcdctlKVTests.Node(harness: harness, endpoint: endpoints.joined(separator: ","))
    #expect(try leaderNode.etcdctl("put", "config/a", "1").status == 0)

    // member list: "ID, started, name, peer URLs, client URLs, is learner".
    let listed = try all.etcdctl("member", "list")
    let rows = listed.stdout.split(separator: "\n").map { $0.components(separatedBy: ", ") }
    #expect(rows.count == 3, "\(listed.stdout)\(listed.stderr)")
    var ids: [String: String] = [:]
    for row in rows where row.count == 6 {
      ids[row[2]] = row[0]
      let spec = harness.spec(row[2])
      #expect(
        row[1] == "started" && row[3] == "http://\(spec.raft)" && row[4] == "http://\(spec.http)", "\(row)")
      #expect(row[5] == "false")
    }
    #expect(Set(ids.keys) == Set(names), "\(listed.stdout)")

    // endpoint status: each member's id, exactly one leader, and the leader is the raft leader.
    let status = try all.etcdctl("endpoint", "status", "-w", "json")
    let statuses =
      (try? JSONSerialization.jsonObject(with: Data(status.stdout.utf8))) as? [[String: Any]] ?? []
    #expect(statuses.count == 3, "\(status.stdout)\(status.stderr)")
    var leaders: Set<UInt64> = []
    for entry in statuses {
      let fields = entry["Status"] as? [String: Any] ?? [:]
      let header = fields["header"] as? [String: Any] ?? [:]
      let member = (header["member_id"] as? NSNumber)?.uint64Value ?? 0
      let endpoint = entry["Endpoint"] as? String ?? ""
      let name = names.first { harness.spec($0).http == endpoint } ?? ""
      #expect(ids[name] == String(member, radix: 16), "\(entry)")
      leaders.insert((fields["leader"] as? NSNumber)?.uint64Value ?? 0)
      #expect((fields["raftIndex"] as? Int ?? fields["raft_index"] as? Int ?? 0) > 0, "\(entry)")
    }
    #expect(leaders.count == 1 && leaders.first.map { String($0, radix: 16) } == ids[leader], "\(statuses)")
    // Any member serves: a follower forwards writes and linearizable reads to the leader.
    for follower in names where follower != leader {
      let node = EtcdctlKVTests.Node(harness: harness, endpoint: harness.spec(follower).http)
      let put = try node.etcdctl("put", "via/\(follower)", "1")
      #expect(put.status == 0 && put.stdout == "OK\n", "\(put.stderr)")
      #expect(try node.etcdctl("get", "via/\(follower)", "--print-value-only").stdout == "1\n")
      let txn = try node.etcdctl(
        "txn", stdin: "value(\"via/\(follower)\") = \"1\"\n\nput via/txn \(follower)\n\n\n")
      #expect(txn.stdout.hasPrefix("SUCCESS"), "\(txn.stdout)\(txn.stderr)")
      let granted = try node.etcdctl("lease", "grant", "60")
      let id = try #require(granted.stdout.split(separator: " ").dropFirst().first, "\(granted.stderr)")
      #expect(try node.etcdctl("lease", "timetolive", String(id)).stdout.contains("granted with TTL(60s)"))
      // The leader's errors reach the client as etcd's, through the follower that forwarded.
      let duplicate = try node.etcdctl("txn", stdin: "\nput dup 1\nput dup 2\n\n\n")
      #expect(
        duplicate.stderr.contains("Error: etcdserver: duplicate key given in txn request"),
        "\(duplicate.stderr)")
      // A follower passes the keep-alive stream on to the leader, which alone renews.
      let renewed = try node.etcdctl("lease", "keep-alive", "--once", String(id))
      #expect(renewed.stdout == "lease \(id) keepalived with TTL(60)\n", "\(renewed.stdout)\(renewed.stderr)")
      #expect(try node.etcdctl("lease", "revoke", String(id)).stdout == "lease \(id) revoked\n")
    }
    let health = try all.etcdctl("endpoint", "health")
    #expect(
      health.status == 0 && health.stderr.components(separatedBy: "is healthy").count == 4, "\(health.stderr)"
    )

    // hashkv: every member applied the same history, so the hashes agree.
    let hashes = try all.etcdctl("endpoint", "hashkv", "-w", "json")
    let hashed = (try? JSONSerialization.jsonObject(with: Data(hashes.stdout.utf8))) as? [[String: Any]] ?? []
    let values = Set(
      hashed.compactMap { (($0["HashKV"] as? [String: Any])?["hash"] as? NSNumber)?.uint64Value })
    #expect(hashed.count == 3 && values.count == 1, "\(hashes.stdout)\(hashes.stderr)")

    let defrag = try all.etcdctl("defrag")
    #expect(defrag.status == 0 && defrag.stdout.components(separatedBy: "Finished defragmenting").count == 4)
    #expect(try all.etcdctl("alarm", "list").stdout == "")

    // move-leader: to a follower, by its member id; the cluster then reports the new leader.
    let target = try #require(names.first { $0 != leader })
    let moved = try leaderNode.etcdctl("move-leader", try #require(ids[target]))
    #expect(
      moved.status == 0 && moved.stdout.contains("Leadership transferred"), "\(moved.stdout)\(moved.stderr)")
    #expect(await harness.waitForLeader(among: names) == target)
    #expect(
      try leaderNode.etcdctl("get", "config/a", "--consistency=s", "--print-value-only").stdout == "1\n")
  }
}
