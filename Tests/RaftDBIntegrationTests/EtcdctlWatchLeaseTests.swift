import Foundation
import Testing

/// etcd's Watch and Lease services on the HTTP port, driven by etcdctl 3.4 as a user would: a live
/// prefix watch with previous values, a watch replaying history from a revision, a watch from a
/// compacted revision, and leases granted, attached, inspected, renewed, revoked and left to expire.
@Suite(.serialized) struct EtcdctlWatchLeaseTests {
  typealias Node = EtcdctlKVTests.Node

  func revision(_ node: Node) throws -> Int {
    let header = EtcdctlKVTests.json(try node.etcdctl("get", "none", "-w", "json").stdout)["header"]
    // etcd's JSON leaves out zero fields: an empty store's header has no revision.
    let fields = try #require(header as? [String: Any])
    return fields["revision"] as? Int ?? 0
  }

  @Test func aPrefixWatchPrintsChangesAsTheyHappenAndReplaysFromARevision() async throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: EtcdctlKVTests.etcdctl.path),
      "run scripts/install-test-deps.sh")
    let node = try await EtcdctlKVTests.startNode()
    defer { node.harness.stopAll() }
    let start = try revision(node) + 1

    let watch = try BackgroundRaftctl(
      node.harness, "etcdctl-watch",
      ["--endpoints=\(node.endpoint)", "watch", "cfg/", "--prefix", "--prev-kv"],
      executable: EtcdctlKVTests.etcdctl)
    defer { watch.stop() }
    #expect(
      await node.harness.eventually { await node.harness.metric("raftdb_watchers", "node01") == 1 },
      "\(watch.stderr())")
    #expect(try node.etcdctl("put", "cfg/a", "1").status == 0)
    #expect(try node.etcdctl("put", "cfg/a", "2").status == 0)
    #expect(try node.etcdctl("put", "other", "x").status == 0)
    #expect(try node.etcdctl("del", "cfg/a").stdout == "1\n")
    // etcdctl prints PUT or DELETE, then (with --prev-kv) the previous key and value, then the key
    // and value; a delete's value is empty.
    let live = ["PUT", "cfg/a", "1", "PUT", "cfg/a", "1", "cfg/a", "2", "DELETE", "cfg/a", "2", "cfg/a", ""]
    #expect(await node.harness.eventually { watch.lines() == live }, "\(watch.stdout())\(watch.stderr())")
    watch.stop()
    #expect(
      await node.harness.eventually { await node.harness.metric("raftdb_watchers", "node01") == 0 },
      "the watch ends with its stream")

    // From a past revision: the same history again, in order, then it keeps watching.
    let replay = try BackgroundRaftctl(
      node.harness, "etcdctl-replay", ["--endpoints=\(node.endpoint)", "watch", "cfg/a", "--rev=\(start)"],
      executable: EtcdctlKVTests.etcdctl)
    defer { replay.stop() }
    let history = ["PUT", "cfg/a", "1", "PUT", "cfg/a", "2", "DELETE", "cfg/a", ""]
    #expect(
      await node.harness.eventually { replay.lines() == history }, "\(replay.stdout())\(replay.stderr())")
    #expect(try node.etcdctl("put", "cfg/a", "3").status == 0)
    #expect(await node.harness.eventually { replay.lines() == history + ["PUT", "cfg/a", "3"] })
    replay.stop()

    // From a compacted revision: etcd's compacted cancel, which etcdctl reports.
    let head = try revision(node)
    #expect(try node.etcdctl("compaction", "\(head)").status == 0)
    let compacted = try ClusterHarness.runProcess(
      EtcdctlKVTests.etcdctl, ["--endpoints=\(node.endpoint)", "watch", "cfg/a", "--rev=\(start)"],
      timeout: 10)
    #expect(
      compacted.stdout.contains("required revision has been compacted")
        || compacted.stderr.contains("required revision has been compacted"),
      "\(compacted.stdout)\(compacted.stderr)")
  }

  @Test func leasesAreGrantedAttachedRenewedRevokedAndExpire() async throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: EtcdctlKVTests.etcdctl.path),
      "run scripts/install-test-deps.sh")
    let node = try await EtcdctlKVTests.startNode()
    defer { node.harness.stopAll() }

    let granted = try node.etcdctl("lease", "grant", "60")
    let id = try #require(
      granted.stdout.split(separator: " ").dropFirst().first.map(String.init),
      "\(granted.stdout)\(granted.stderr)")
    #expect(granted.stdout == "lease \(id) granted with TTL(60s)\n")
    #expect(try node.etcdctl("put", "svc/a", "10.0.0.1", "--lease=\(id)").status == 0)
    let live = try node.etcdctl("lease", "timetolive", id, "--keys").stdout
    #expect(
      live.hasPrefix("lease \(id) granted with TTL(60s), remaining(")
        && live.contains("attached keys([svc/a])"), "\(live)")
    #expect(try node.etcdctl("lease", "list").stdout == "found 1 leases\n\(id)\n")
    #expect(
      try node.etcdctl("lease", "keep-alive", "--once", id).stdout == "lease \(id) keepalived with TTL(60)\n")

    #expect(try node.etcdctl("lease", "revoke", id).stdout == "lease \(id) revoked\n")
    #expect(try node.etcdctl("get", "svc/a").stdout == "", "a revoked lease's keys are deleted")
    #expect(try node.etcdctl("lease", "timetolive", id).stdout == "lease \(id) already expired\n")
    let again = try node.etcdctl("lease", "revoke", id)
    #expect(
      again.status != 0 && again.stderr.contains("etcdserver: requested lease not found"), "\(again.stderr)")
    #expect(try node.etcdctl("lease", "keep-alive", "--once", id).stderr.contains("not found"))

    // A short lease nobody renews expires and takes its key with it.
    let short = try node.etcdctl("lease", "grant", "2").stdout.split(separator: " ")[1]
    #expect(try node.etcdctl("put", "svc/b", "x", "--lease=\(short)").status == 0)
    #expect(
      await node.harness.eventually(timeout: .seconds(20)) {
        (try? node.etcdctl("get", "svc/b").stdout) == ""
      }, "the lease expired and its key went")
  }
}
