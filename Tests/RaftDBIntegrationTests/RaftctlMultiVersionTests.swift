import Foundation
import Testing

/// `raftctl` on the multi-version routes, on a real three-node cluster: prefix listings, leases,
/// transactions from stdin, and `raftctl lock` serializing two commands with growing fencing tokens.
@Suite(.serialized) struct RaftctlMultiVersionTests {
  @Test func prefixLeasesTxnAndLock() async throws {
    let harness = try ClusterHarness()
    let names = ["node01", "node02", "node03"]
    let leader = try await harness.startCluster(names)
    try #require(await MultiVersionHTTPTests.waitForVersion3(harness, names), "\(harness.log(leader))")
    // Every member, so that the client's redirects to the leader are exercised too.
    let endpoints = ["--endpoints", names.map { "http://\(harness.spec($0).http)" }.joined(separator: ",")]
    func run(_ arguments: [String], stdin: String? = nil) throws -> ClusterHarness.CommandRun {
      try ClusterHarness.runRaftctl(arguments + endpoints, stdin: stdin)
    }

    // A prefix, as etcdctl prints it: key line, value line.
    var revisions: [String: Int] = [:]
    for (key, value) in [("svc/a", "1"), ("svc/b", "2"), ("svc/c", "3"), ("svd", "x")] {
      let put = try run(["put", key, value, "-w", "json"])
      #expect(put.status == 0, "\(put.stderr)")
      revisions[key] = MultiVersionHTTPTests.json(put.stdout)["revision"] as? Int
    }
    let listed = try run(["get", "svc/", "--prefix"])
    #expect(
      listed.status == 0 && listed.stdout == "svc/a\n1\nsvc/b\n2\nsvc/c\n3\n",
      "\(listed.stdout)\(listed.stderr)")
    #expect(try run(["get", "svc/", "--prefix", "--limit", "2", "--keys-only"]).stdout == "svc/a\nsvc/b\n")
    #expect(try run(["get", "svc/", "--prefix", "--count-only"]).stdout == "3\n")
    let json = MultiVersionHTTPTests.json(try run(["get", "svc/", "--prefix", "-w", "json"]).stdout)
    #expect(json["count"] as? Int == 3 && (json["kvs"] as? [[String: Any]])?.count == 3, "\(json)")
    // A single key at a past revision, and the plain get unchanged.
    let revision = try #require(revisions["svc/a"])
    let first = MultiVersionHTTPTests.json(
      try run(["get", "svc/a", "--rev", "\(revision)", "-w", "json"]).stdout)
    #expect((first["kvs"] as? [[String: Any]])?.first?["mod_revision"] as? Int == revision, "\(first)")
    _ = try run(["put", "svc/a", "changed"])
    #expect(try run(["get", "svc/a", "--rev", "\(revision)"]).stdout == "1\n")
    #expect(try run(["get", "svc/a"]).stdout == "changed\n")
    #expect(try run(["get", "svc/zzz", "--rev", "\(revision)"]).status == 1)

    // A lease: granted, a key put under it, its ttl and keys shown, listed, renewed, revoked.
    let grant = try run(["lease", "grant", "30"])
    #expect(
      grant.status == 0 && grant.stdout.hasSuffix("granted with TTL(30s)\n"), "\(grant.stdout)\(grant.stderr)"
    )
    let id = try #require(grant.stdout.split(separator: " ").dropFirst().first.map(String.init))
    #expect(try run(["put", "svc/leased", "v", "--lease", id]).status == 0)
    let ttl = try run(["lease", "ttl", id, "--keys"])
    #expect(
      ttl.stdout.contains("granted with TTL(30s), remaining(") && ttl.stdout.contains(#"["svc/leased"]"#),
      "\(ttl.stdout)\(ttl.stderr)")
    #expect(try run(["lease", "list"]).stdout.contains("\(id)\n"))
    let renewed = try run(["lease", "keep-alive", id, "--once"])
    #expect(renewed.stdout == "lease \(id) keepalived with TTL(30)\n", "\(renewed.stdout)\(renewed.stderr)")
    #expect(try run(["lease", "revoke", id]).stdout.contains("revoked (1 keys deleted)"))
    #expect(try run(["lease", "ttl", id]).status == 1)
    #expect(try run(["get", "svc/leased"]).status == 1)

    // A transaction from stdin: the compare holds, so the success branch runs.
    let txn = #"""
      {"compare": [{"key": "svc/b", "target": "value", "result": "=", "value": "2"}],
       "success": [{"put": {"key": "svc/b", "value": "20"}}, {"get": {"key": "svc/c"}}],
       "failure": [{"get": {"key": "svc/b"}}]}
      """#
    let succeeded = try run(["txn"], stdin: txn)
    #expect(succeeded.stdout == "SUCCESS\n\nOK\n\nsvc/c\n3\n", "\(succeeded.stdout)\(succeeded.stderr)")
    let failed = try run(["txn", "-w", "json"], stdin: txn)
    #expect(MultiVersionHTTPTests.json(failed.stdout)["succeeded"] as? Bool == false, "\(failed.stdout)")
    #expect(try run(["txn"], stdin: "{not json").status == 64)

    // Two lock holders at once: each records its token and start and end times; the intervals
    // must not overlap, and the second holder's token must be the greater.
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("raftctl-lock-\(UUID())")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let log = directory.appendingPathComponent("log").path
    let script =
      #"echo "start $(date +%s.%N) $RAFTDB_LOCK_REVISION" >> \#(log); sleep 1; echo "end $(date +%s.%N) $RAFTDB_LOCK_REVISION" >> \#(log)"#
    let arguments = ["lock", "mylock"] + endpoints + ["--", "sh", "-c", script]
    async let one = Task.detached { try ClusterHarness.runRaftctl(arguments) }.value
    async let two = Task.detached { try ClusterHarness.runRaftctl(arguments) }.value
    let runs = try await [one, two]
    for run in runs { #expect(run.status == 0, "\(run.stdout)\(run.stderr)") }
    let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map {
      $0.split(separator: " ").map(String.init)
    }
    try #require(lines.count == 4, "\(lines)")
    #expect(lines.map { $0[0] } == ["start", "end", "start", "end"], "the holders overlapped: \(lines)")
    #expect(lines[0][2] == lines[1][2] && lines[2][2] == lines[3][2], "\(lines)")
    let times = lines.map { Double($0[1]) ?? 0 }
    #expect(times == times.sorted() && times[2] >= times[1], "\(lines)")
    #expect((Int(lines[0][2]) ?? 0) < (Int(lines[2][2]) ?? 0), "fencing tokens grow: \(lines)")
    // Both released: nothing is left under the lock's prefix.
    #expect(try run(["get", "mylock/", "--prefix", "--count-only"]).stdout == "0\n")
  }
}
