import Foundation
import Testing

/// etcd's v3 gRPC KV service (on the HTTP port, and on `-gaddr`) driven by etcdctl 3.4, Debian's etcd-client, as a user
/// would: put, get (prefix, keys-only, a past revision, JSON), del, txn from stdin and compaction,
/// asserting on what etcdctl prints, etcd's error messages included.
@Suite(.serialized) struct EtcdctlKVTests {
  static let etcdctl = URL(fileURLWithPath: "/usr/bin/etcdctl")

  struct Node {
    let harness: ClusterHarness
    let endpoint: String

    /// Runs etcdctl against the node; returns its exit status and what it printed.
    func etcdctl(_ arguments: String..., stdin: String? = nil) throws -> ClusterHarness.CommandRun {
      try ClusterHarness.runProcess(
        EtcdctlKVTests.etcdctl,
        ["--endpoints=\(endpoint)", "--dial-timeout=5s", "--command-timeout=10s"] + arguments, stdin: stdin,
        timeout: 30)
    }
  }

  /// One node; etcdctl talks to its HTTP port (gRPC shares it, as etcd's client URL does), or to a
  /// `-gaddr` listener of its own.
  static func startNode(separateListener: Bool = false, arguments: [String] = []) async throws -> Node {
    let harness = try ClusterHarness()
    let spec = harness.addNode("node01")
    let grpcPort = PortAllocator.shared.next()
    try harness.start(
      "node01", arguments: (separateListener ? ["-gaddr", "127.0.0.1:\(grpcPort)"] : []) + arguments)
    try #require(await harness.waitForLeader(among: ["node01"]) != nil, "\(harness.log("node01"))")
    try #require(await MultiVersionHTTPTests.waitForVersion3(harness, ["node01"]), "\(harness.log("node01"))")
    return Node(harness: harness, endpoint: separateListener ? "127.0.0.1:\(grpcPort)" : spec.http)
  }

  static func json(_ text: String) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
  }

  @Test func putGetDeleteAndRevisions() async throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: Self.etcdctl.path), "run scripts/install-test-deps.sh")
    let node = try await Self.startNode()
    defer { node.harness.stopAll() }

    let put = try node.etcdctl("put", "foo", "bar")
    #expect(
      put.status == 0 && put.stdout == "OK\n", "\(put.stdout)\(put.stderr)\n\(node.harness.log("node01"))")
    let get = try node.etcdctl("get", "foo")
    #expect(get.stdout == "foo\nbar\n", "\(get.stdout)\(get.stderr)")
    #expect(try node.etcdctl("get", "foo", "--print-value-only").stdout == "bar\n")

    // JSON: etcd's header and key-value fields, keys and values in base64.
    let first = Self.json(try node.etcdctl("get", "foo", "-w", "json").stdout)
    let header = first["header"] as? [String: Any] ?? [:]
    let kv = (first["kvs"] as? [[String: Any]])?.first ?? [:]
    #expect(kv["key"] as? String == "Zm9v" && kv["value"] as? String == "YmFy", "\(first)")
    #expect(kv["version"] as? Int == 1, "\(first)")
    let created = try #require(kv["create_revision"] as? Int, "\(first)")
    #expect(kv["mod_revision"] as? Int == created)
    #expect(header["revision"] as? Int == created, "\(first)")
    // Member and cluster ids are 64-bit and often above Int64.max, so read them unsigned.
    #expect(
      ((header["cluster_id"] as? NSNumber)?.uint64Value ?? 0) != 0
        && ((header["member_id"] as? NSNumber)?.uint64Value ?? 0) != 0, "\(header)")
    #expect((header["raft_term"] as? Int ?? 0) >= 1, "\(header)")

    // A second put: version 2, and the first value is still there at the first revision.
    #expect(try node.etcdctl("put", "foo", "baz").stdout == "OK\n")
    let second = Self.json(try node.etcdctl("get", "foo", "-w", "json").stdout)
    let kv2 = (second["kvs"] as? [[String: Any]])?.first ?? [:]
    #expect(kv2["version"] as? Int == 2 && kv2["create_revision"] as? Int == created, "\(second)")
    #expect(kv2["mod_revision"] as? Int == created + 1, "\(second)")
    #expect(try node.etcdctl("get", "foo", "--rev=\(created)", "--print-value-only").stdout == "bar\n")
    // --prev-kv shows the value a put replaced.
    let replaced = try node.etcdctl("put", "foo", "qux", "--prev-kv")
    #expect(replaced.stdout == "OK\nfoo\nbaz\n", "\(replaced.stdout)\(replaced.stderr)")

    // Prefix, keys only, limit, sort; count ignores the limit.
    for (key, value) in [("services/web/b", "10.0.0.2"), ("services/web/a", "10.0.0.1"), ("services/x", "x")]
    {
      #expect(try node.etcdctl("put", key, value).status == 0)
    }
    let listed = try node.etcdctl("get", "services/web/", "--prefix", "--keys-only")
    #expect(
      listed.stdout.split(separator: "\n") == ["services/web/a", "services/web/b"],
      "\(listed.stdout)\(listed.stderr)")
    let descending = try node.etcdctl(
      "get", "services/", "--prefix", "--keys-only", "--sort-by=KEY", "--order=DESCEND")
    #expect(descending.stdout.split(separator: "\n") == ["services/x", "services/web/b", "services/web/a"])
    let limited = Self.json(
      try node.etcdctl("get", "services/", "--prefix", "--limit=1", "-w", "json").stdout)
    #expect(limited["count"] as? Int == 3 && limited["more"] as? Bool == true, "\(limited)")
    #expect((limited["kvs"] as? [Any])?.count == 1)
    // keys_only: the JSON carries keys and their revisions but no values.
    let keysOnly = Self.json(
      try node.etcdctl("get", "services/", "--prefix", "--keys-only", "-w", "json").stdout)
    let keyed = keysOnly["kvs"] as? [[String: Any]] ?? []
    #expect(keyed.count == 3 && keyed.allSatisfy { $0["value"] == nil && $0["key"] != nil }, "\(keysOnly)")
    // A serializable read is answered by the member itself.
    #expect(try node.etcdctl("get", "foo", "--consistency=s", "--print-value-only").stdout == "qux\n")

    // Deletes print how many keys went.
    // gRPC and the HTTP API share the port and the keyspace.
    let course = try await node.harness.request("node01", .GET, "/key/foo")
    #expect(course.status == .ok && course.bodyText.contains("qux"), "\(course.bodyText)")
    #expect(try node.etcdctl("del", "services/", "--prefix").stdout == "3\n")
    #expect(try node.etcdctl("del", "nothing").stdout == "0\n")
    #expect(try node.etcdctl("get", "services/", "--prefix").stdout == "")
  }

  @Test func txnFromStdinAndCompaction() async throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: Self.etcdctl.path), "run scripts/install-test-deps.sh")
    let node = try await Self.startNode(separateListener: true)
    defer { node.harness.stopAll() }
    #expect(try node.etcdctl("put", "lock/owner", "alice").status == 0)

    // etcdctl's non-interactive txn: compares, a blank line, then the success and failure requests.
    let script = """
      value("lock/owner") = "alice"

      put lock/token 1
      get lock/owner

      put lock/owner bob


      """
    let succeeded = try node.etcdctl("txn", stdin: script)
    #expect(
      succeeded.stdout == "SUCCESS\n\nOK\n\nlock/owner\nalice\n", "\(succeeded.stdout)\(succeeded.stderr)")
    let failing = script.replacingOccurrences(of: #""alice""#, with: #""carol""#)
    let failed = try node.etcdctl("txn", stdin: failing)
    #expect(failed.stdout == "FAILURE\n\nOK\n", "\(failed.stdout)\(failed.stderr)")
    #expect(try node.etcdctl("get", "lock/owner", "--print-value-only").stdout == "bob\n")
    // A txn that puts one key twice is etcd's ErrDuplicateKey.
    let twice = try node.etcdctl("txn", stdin: "\nput k 1\nput k 2\n\n\n")
    #expect(
      twice.status != 0 && twice.stderr.contains("duplicate key given in txn request"), "\(twice.stderr)")

    // Compaction: reads below it are etcd's ErrCompacted, above the head ErrFutureRev.
    let head = try #require(
      (Self.json(try node.etcdctl("get", "lock/owner", "-w", "json").stdout)["header"] as? [String: Any])?[
        "revision"]
        as? Int)
    let compacted = try node.etcdctl("compaction", "\(head)")
    #expect(compacted.stdout == "compacted revision \(head)\n", "\(compacted.stdout)\(compacted.stderr)")
    let old = try node.etcdctl("get", "lock/owner", "--rev=\(head - 1)")
    #expect(
      old.status != 0 && old.stderr.contains("etcdserver: mvcc: required revision has been compacted"),
      "\(old.stdout)\(old.stderr)")
    let future = try node.etcdctl("get", "lock/owner", "--rev=\(head + 100)")
    #expect(
      future.status != 0
        && future.stderr.contains("etcdserver: mvcc: required revision is a future revision"),
      "\(future.stdout)\(future.stderr)")
    #expect(try node.etcdctl("get", "lock/owner", "--rev=\(head)", "--print-value-only").stdout == "bob\n")
  }
}
