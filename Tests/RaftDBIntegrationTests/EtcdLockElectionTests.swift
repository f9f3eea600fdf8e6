import EtcdAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Synchronization
import Testing

/// etcd's v3lock and v3election services through grpc-swift's client (etcdctl's `lock` and `elect`
/// run etcd's client-side recipe instead, over KV, leases and watch: those are driven here too), on
/// a real three-member cluster with the calls sent to followers. Also: the Auth service's answers
/// while raftdb has no authentication, and MemberRemove and MemberPromote through etcdctl.
@Suite(.serialized) struct EtcdLockElectionTests {
  /// What an observer received, in order.
  final class Recorder: Sendable {
    private let values = Mutex<[String]>([])
    func append(_ value: String) { values.withLock { $0.append(value) } }
    var all: [String] { values.withLock { $0 } }

    /// The `index`th value received, waiting up to 10 s for it (nil: it did not come).
    func value(at index: Int) async -> String? {
      for _ in 0..<200 {
        if let value = values.withLock({ index < $0.count ? $0[index] : nil }) { return value }
        try? await Task.sleep(for: .milliseconds(50))
      }
      return nil
    }
  }

  typealias Client = GRPCClient<HTTP2ClientTransport.Posix>

  /// Runs `body` with a gRPC client of the member listening on `port`.
  static func withClient<T: Sendable>(port: Int, _ body: @Sendable (Client) async throws -> T) async throws
    -> T
  {
    try await withGRPCClient(
      transport: .http2NIOPosix(
        target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
    ) { try await body($0) }
  }

  /// `body`'s result, or a failure after `seconds` (a call that should have returned hangs).
  static func within<T: Sendable>(_ seconds: Double, _ body: @escaping @Sendable () async throws -> T)
    async throws
    -> T
  {
    try await withThrowingTaskGroup(of: T?.self) { group in
      group.addTask { try await body() }
      group.addTask {
        try await Task.sleep(for: .seconds(seconds))
        return nil
      }
      defer { group.cancelAll() }
      guard let first = try await group.next(), let result = first else {
        throw HarnessError("no answer within \(seconds) s")
      }
      return result
    }
  }

  static func grant(_ client: Client, ttl: Int64) async throws -> Int64 {
    var request = Etcdserverpb_LeaseGrantRequest()
    request.ttl = ttl
    return try await Etcdserverpb_Lease.Client(wrapping: client).leaseGrant(request).id
  }

  static func lock(_ client: Client, _ name: String, lease: Int64) async throws -> V3lockpb_LockResponse {
    var request = V3lockpb_LockRequest()
    request.name = Data(name.utf8)
    request.lease = lease
    return try await V3lockpb_Lock.Client(wrapping: client).lock(request)
  }

  static func createRevision(_ client: Client, _ key: Data) async throws -> Int64? {
    var request = Etcdserverpb_RangeRequest()
    request.key = key
    return try await Etcdserverpb_KV.Client(wrapping: client).range(request).kvs.first?.createRevision
  }

  static func rpcError(_ body: () async throws -> Void) async -> RPCError? {
    do {
      try await body()
      return nil
    } catch let error as RPCError {
      return error
    } catch {
      return RPCError(code: .unknown, message: "\(error)")
    }
  }

  @Test func locksElectionsAuthAndMembership() async throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: EtcdctlKVTests.etcdctl.path),
      "run scripts/install-test-deps.sh")
    let harness = try ClusterHarness()
    defer { harness.stopAll() }
    let names = ["node01", "node02", "node03"]
    let leader = try await harness.startCluster(names)
    try #require(await MultiVersionHTTPTests.waitForVersion3(harness, names), "\(harness.log(leader))")
    let followers = names.filter { $0 != leader }
    let one = harness.spec(followers[0]).httpPort
    let other = harness.spec(followers[1]).httpPort

    try await lockQueueAndFencing(one: one, other: other)
    try await lockReleasedByLeaseExpiry(port: one)
    try await election(one: one, other: other)
    try etcdctlRecipes(EtcdctlKVTests.Node(harness: harness, endpoint: harness.spec(followers[0]).http))
    try authAnswers(EtcdctlKVTests.Node(harness: harness, endpoint: harness.spec(followers[1]).http))
    try await membership(harness, leader: leader)
  }

  /// Two holders in turn on one lock, through two followers: the second waits until the first
  /// unlocks, its key's create revision (the fencing token) is larger, and a waiter that gives up
  /// leaves the queue.
  func lockQueueAndFencing(one: Int, other: Int) async throws {
    try await Self.withClient(port: one) { first in
      try await Self.withClient(port: other) { second in
        let leaseA = try await Self.grant(first, ttl: 30)
        let leaseB = try await Self.grant(second, ttl: 30)
        let held = try await Self.within(10) { try await Self.lock(first, "jobs", lease: leaseA) }
        #expect(String(decoding: held.key, as: UTF8.self) == "jobs/\(String(leaseA, radix: 16))")
        let tokenA = try #require(try await Self.createRevision(first, held.key))

        // Locking again with the same lease reuses the key: the lock is held already.
        let again = try await Self.within(10) { try await Self.lock(first, "jobs", lease: leaseA) }
        let againToken = try await Self.createRevision(first, again.key)
        #expect(again.key == held.key && againToken == tokenA)

        // A second holder waits, and a third that gives up (its call cancelled) leaves no key.
        let waiting = Task { try await Self.lock(second, "jobs", lease: leaseB) }
        let leaseC = try await Self.grant(second, ttl: 30)
        let givingUp = Task { try await Self.lock(second, "jobs", lease: leaseC) }
        try await Task.sleep(for: .milliseconds(700))
        let keyC = Data("jobs/\(String(leaseC, radix: 16))".utf8)
        #expect(try await Self.createRevision(first, keyC) != nil, "the third waiter queued")
        givingUp.cancel()
        _ = await givingUp.result
        var left = false
        for _ in 0..<100 where !left {
          left = try await Self.createRevision(first, keyC) == nil
          if !left { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(left, "a cancelled lock wait dequeues its key")

        var unlock = V3lockpb_UnlockRequest()
        unlock.key = held.key
        _ = try await V3lockpb_Lock.Client(wrapping: first).unlock(unlock)
        let next = try await Self.within(10) { try await waiting.value }
        #expect(String(decoding: next.key, as: UTF8.self) == "jobs/\(String(leaseB, radix: 16))")
        let tokenB = try #require(try await Self.createRevision(second, next.key))
        #expect(tokenB > tokenA, "fencing tokens grow: \(tokenA) then \(tokenB)")
        #expect(next.header.revision >= tokenB)

        // A lock without a lease is refused, clearly.
        let refused = await Self.rpcError { _ = try await Self.lock(first, "jobs", lease: 0) }
        #expect(refused?.code == .invalidArgument && refused?.message.contains("needs a lease") == true)
        var unlockB = V3lockpb_UnlockRequest()
        unlockB.key = next.key
        _ = try await V3lockpb_Lock.Client(wrapping: second).unlock(unlockB)
      }
    }
  }

  /// A holder that stops renewing its lease loses the lock to the waiter when the lease expires.
  func lockReleasedByLeaseExpiry(port: Int) async throws {
    try await Self.withClient(port: port) { client in
      let short = try await Self.grant(client, ttl: 2)
      let long = try await Self.grant(client, ttl: 30)
      _ = try await Self.within(10) { try await Self.lock(client, "expiring", lease: short) }
      let began = ContinuousClock.now
      let taken = try await Self.within(20) { try await Self.lock(client, "expiring", lease: long) }
      #expect(String(decoding: taken.key, as: UTF8.self) == "expiring/\(String(long, radix: 16))")
      #expect(ContinuousClock.now - began >= .seconds(1), "the waiter waited for the expiry")
    }
  }

  /// Campaign, Leader, Observe, Proclaim and Resign, with a second candidate taking over.
  func election(one: Int, other: Int) async throws {
    try await Self.withClient(port: one) { first in
      try await Self.withClient(port: other) { second in
        let electionA = V3electionpb_Election.Client(wrapping: first)
        let electionB = V3electionpb_Election.Client(wrapping: second)
        let ask = {
          var request = V3electionpb_LeaderRequest()
          request.name = Data("service".utf8)
          return request
        }()
        let none = await Self.rpcError { _ = try await electionA.leader(ask) }
        #expect(none?.message == "election: no leader", "\(String(describing: none))")

        // An observer (on the other member) sees every leader and each proclamation, in order.
        let seen = Recorder()
        let observer = Task {
          try await electionB.observe(ask) { response in
            for try await message in response.messages {
              seen.append(String(decoding: message.kv.value, as: UTF8.self))
            }
          }
        }
        defer { observer.cancel() }

        let leaseA = try await Self.grant(first, ttl: 30)
        var campaignA = V3electionpb_CampaignRequest()
        campaignA.name = ask.name
        campaignA.lease = leaseA
        campaignA.value = Data("a:1".utf8)
        let campaigningA = campaignA
        let leaderA = try await Self.within(10) { try await electionA.campaign(campaigningA) }.leader
        #expect(String(decoding: leaderA.key, as: UTF8.self) == "service/\(String(leaseA, radix: 16))")
        let firstLeader = try await electionB.leader(ask)
        #expect(String(decoding: firstLeader.kv.value, as: UTF8.self) == "a:1")
        #expect(await seen.value(at: 0) == "a:1", "\(seen.all)")

        let leaseB = try await Self.grant(second, ttl: 30)
        var campaignB = campaignA
        campaignB.lease = leaseB
        campaignB.value = Data("b:1".utf8)
        let campaigningB = campaignB
        let waiting = Task { try await electionB.campaign(campaigningB) }

        var proclaim = V3electionpb_ProclaimRequest()
        proclaim.leader = leaderA
        proclaim.value = Data("a:2".utf8)
        _ = try await electionA.proclaim(proclaim)
        #expect(await seen.value(at: 1) == "a:2", "\(seen.all)")

        var resign = V3electionpb_ResignRequest()
        resign.leader = leaderA
        _ = try await electionA.resign(resign)
        let leaderB = try await Self.within(10) { try await waiting.value }.leader
        #expect(leaderB.rev > leaderA.rev)
        #expect(await seen.value(at: 2) == "b:1", "\(seen.all)")

        // The old leader can no longer proclaim: its key's generation is gone.
        proclaim.value = Data("a:3".utf8)
        let stale = await Self.rpcError { _ = try await electionA.proclaim(proclaim) }
        #expect(stale?.message == "election: not leader", "\(String(describing: stale))")
        let secondLeader = try await electionA.leader(ask)
        #expect(String(decoding: secondLeader.kv.value, as: UTF8.self) == "b:1")
        resign.leader = leaderB
        _ = try await electionB.resign(resign)
      }
    }
  }

  /// etcdctl's lock and elect (etcd's client-side recipes over KV, leases and watch).
  func etcdctlRecipes(_ node: EtcdctlKVTests.Node) throws {
    let locked = try node.etcdctl("lock", "ctl-lock", "--", "sh", "-c", "echo held $ETCD_LOCK_KEY")
    #expect(
      locked.status == 0 && locked.stdout.hasPrefix("held ctl-lock/"), "\(locked.stdout)\(locked.stderr)")
    let elected = try ClusterHarness.runProcess(
      EtcdctlKVTests.etcdctl, ["--endpoints=\(node.endpoint)", "elect", "ctl-election", "proposal"],
      timeout: 4)
    // `elect` campaigns, prints the leader key and value, and holds until it is stopped.
    #expect(
      elected.stdout.contains("ctl-election/") && elected.stdout.contains("proposal"), "\(elected.stdout)")
  }

  /// Until raftdb has authentication: a client that sends credentials carries on without a token,
  /// as against an etcd whose auth is off; creating users or enabling auth says it is not served.
  func authAnswers(_ node: EtcdctlKVTests.Node) throws {
    #expect(try node.etcdctl("put", "auth/key", "v").status == 0)
    let withUser = try node.etcdctl("--user", "root:secret", "get", "auth/key", "--print-value-only")
    #expect(withUser.status == 0 && withUser.stdout == "v\n", "\(withUser.stderr)")
    let added = try node.etcdctl("user", "add", "bob:pw")
    #expect(added.status != 0 && added.stderr.contains("Unimplemented") && added.stderr.contains("UserAdd"))
    let enabled = try node.etcdctl("auth", "enable")
    #expect(enabled.status != 0 && enabled.stderr.contains("raftdb does not serve AuthEnable"))
  }

  /// A learner joined with -learner is promoted with `member promote`, and `member remove` takes a
  /// member out, both through a follower.
  func membership(_ harness: ClusterHarness, leader: String) async throws {
    let spec = harness.addNode("node04")
    try harness.start("node04", join: harness.spec(leader).http, arguments: ["-learner"])
    let follower = harness.nodes.first { $0.name != leader && $0.name != "node04" }!
    let node = EtcdctlKVTests.Node(harness: harness, endpoint: follower.http)
    var learnerID: String?
    let joined = await harness.eventually {
      let rows = ((try? node.etcdctl("member", "list"))?.stdout ?? "").split(separator: "\n")
      guard let row = rows.first(where: { $0.contains(", node04, ") }) else { return false }
      learnerID = row.components(separatedBy: ", ").first
      return row.hasSuffix(", true")
    }
    let id = try #require(learnerID, "\(harness.log("node04"))")
    #expect(joined, "node04 listed as a learner")
    let promoted = try node.etcdctl("member", "promote", id)
    #expect(
      promoted.status == 0 && promoted.stdout.contains("promoted"), "\(promoted.stdout)\(promoted.stderr)")
    let listed = try node.etcdctl("member", "list").stdout
    #expect(
      listed.contains("\(id), started, node04, http://\(spec.raft), http://\(spec.http), false"), "\(listed)")
    let again = try node.etcdctl("member", "promote", id)
    #expect(again.stderr.contains("can only promote a learner member"), "\(again.stderr)")

    let removed = try node.etcdctl("member", "remove", id)
    #expect(removed.status == 0 && removed.stdout.contains("removed"), "\(removed.stdout)\(removed.stderr)")
    #expect(!(try node.etcdctl("member", "list").stdout.contains("node04")))
    let unknown = try node.etcdctl("member", "remove", "1234abcd")
    #expect(unknown.status != 0 && unknown.stderr.contains("member not found"), "\(unknown.stderr)")
    harness.kill("node04")
  }
}
