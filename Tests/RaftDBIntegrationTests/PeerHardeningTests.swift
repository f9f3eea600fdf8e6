import Foundation
import NIOCore
import Raft
import RaftDBServer
import Testing

@testable import RaftTransport

/// The hardening review's attacks on the peer port, replayed against real `raftdb` processes over
/// real sockets: each must be refused, counted and logged, and leave the cluster serving with its
/// data intact.
@Suite(.serialized) struct PeerHardeningTests {
  /// The bytes of a hello followed by messages, as a peer would send them.
  static func stream(
    from: NodeID, to: NodeID, kind: WireFormat.StreamKind = .messages, _ messages: [Message] = [],
    extra: (inout ByteBuffer) -> Void = { _ in }
  ) -> [UInt8] {
    var buffer = ByteBufferAllocator().buffer(capacity: 512)
    buffer.writeHello(WireFormat.Hello(version: WireFormat.protocolVersion, kind: kind, from: from, to: to))
    for message in messages { buffer.writeMessageFrame(message) }
    extra(&buffer)
    return Array(buffer.readableBytesView)
  }

  static func term(_ harness: ClusterHarness, _ node: String) async -> UInt64 {
    (await harness.status(node)?["term"] as? NSNumber)?.uint64Value ?? 0
  }

  /// Writes through the leader and reads back linearizably from every node.
  static func clusterServes(_ harness: ClusterHarness, key: String, value: String) async throws -> Bool {
    let client = harness.client()
    defer { Task { await client.close() } }
    try await client.put([key: value])
    for node in harness.nodes.map(\.name) {
      // Every member applies it (a node that just restarted may need a moment to catch up).
      let applied = await harness.eventually(timeout: .seconds(10)) {
        let read = try? await harness.request(node, .GET, "/key/\(key)?level=stale")
        return read?.bodyText.contains(value) ?? false
      }
      guard applied else { return false }
    }
    return try await client.get(key) == value
  }

  func threeNodes() async throws -> (ClusterHarness, String, [String]) {
    let harness = try ClusterHarness()
    let names = ["node01", "node02", "node03"]
    let leader = try await harness.startCluster(names)
    return (harness, leader, names)
  }

  /// Items 1, 3 and 4 from a stranger: impossible terms, appends at term + 1 carrying a forged value,
  /// and transfer-flagged vote requests, sent to every member by a node that is not one. Every
  /// connection is refused at its hello; no term moves; the forged value appears nowhere.
  @Test func aStrangersFramesChangeNothing() async throws {
    let (harness, leader, names) = try await threeNodes()
    let id = try await harness.memberIDs()
    #expect(try await Self.clusterServes(harness, key: "real", value: "v1"))
    let terms = await names.asyncMap { await Self.term(harness, $0) }
    let stranger = NodeID(0xBAD_0BAD)
    for name in names {
      let target = id(name)
      let term = await Self.term(harness, name)
      let forged = AppendEntries(
        prevLogIndex: 0, prevLogTerm: 0,
        entries: [LogEntry(index: 1, term: term + 1, kind: .command, data: Array("forged".utf8))],
        leaderCommit: 1)
      let messages = [
        Message(
          from: stranger, to: target, term: UInt64(Int64.max),
          body: .heartbeat(Heartbeat(commit: 0, readRound: 1))),
        Message(from: stranger, to: target, term: .max, body: .heartbeat(Heartbeat(commit: 0, readRound: 1))),
        Message(from: stranger, to: target, term: term + 1, body: .appendEntries(forged)),
        Message(
          from: stranger, to: target, term: term + 1,
          body: .voteRequest(
            VoteRequest(
              isPreVote: false, lastLogIndex: 1 << 40, lastLogTerm: term, isLeadershipTransfer: true))),
        Message(from: stranger, to: target, term: term, body: .timeoutNow),
      ]
      for _ in 0..<5 {
        let socket = try RawSocket(port: harness.spec(name).raftPort)
        try? socket.send(bytes: Self.stream(from: stranger, to: target, messages))
        #expect(socket.closedByPeer(), "\(name) kept a stranger's connection open")
      }
    }
    try await Task.sleep(for: .seconds(1))
    #expect(await names.asyncMap { await Self.term(harness, $0) } == terms, "a stranger moved a term")
    #expect(await harness.waitForLeader() == leader)
    #expect(try await Self.clusterServes(harness, key: "real", value: "v2"))
    for name in names {
      #expect(
        await harness.metric("raftdb_peer_connections_refused_total", name, labels: #"reason="unknown_peer""#)
          >= 5)
      #expect(harness.log(name).contains("refused a peer connection"))
    }
  }

  /// Items 1, 2 and 4 from a peer that claims a member's id (what the stranger would try next):
  /// the core refuses what no member could send, the leader keeps leading, no forged TimeoutNow
  /// starts an election, and a follower that saw an impossible term restarts cleanly.
  @Test func framesUnderAMembersIdAreValidatedByTheCore() async throws {
    let (harness, leader, names) = try await threeNodes()
    let id = try await harness.memberIDs()
    let follower = names.first { $0 != leader }!
    let other = names.first { $0 != leader && $0 != follower }!
    let term = await Self.term(harness, leader)

    // To the leader, as the follower: a second leader at its own term, a match far beyond its log,
    // a read round it never started, and terms no peer can produce.
    let asFollower = [
      Message(
        from: id(follower), to: id(leader), term: term,
        body: .heartbeat(Heartbeat(commit: 0, readRound: 1))),
      Message(
        from: id(follower), to: id(leader), term: term,
        body: .appendEntriesResponse(.accepted(matchIndex: 1_000_000_000_000))),
      Message(
        from: id(follower), to: id(leader), term: term,
        body: .heartbeatResponse(HeartbeatResponse(readRound: 1 << 40))),
    ]
    let toLeader = try RawSocket(port: harness.spec(leader).raftPort)
    try toLeader.send(bytes: Self.stream(from: id(follower), to: id(leader), asFollower))
    // To a follower, as the leader: impossible terms, and TimeoutNow after TimeoutNow.
    let timeoutNow = Message(from: id(leader), to: id(other), term: term, body: .timeoutNow)
    let impossible = [UInt64(Int64.max), .max].map {
      Message(
        from: id(leader), to: id(other), term: $0,
        body: .heartbeat(Heartbeat(commit: 0, readRound: 1)))
    }
    let toFollower = try RawSocket(port: harness.spec(other).raftPort)
    try toFollower.send(
      bytes: Self.stream(
        from: id(leader), to: id(other), impossible + Array(repeating: timeoutNow, count: 20)))
    for _ in 0..<10 {
      var buffer = ByteBufferAllocator().buffer(capacity: 64)
      buffer.writeMessageFrame(timeoutNow)
      try toFollower.send(bytes: Array(buffer.readableBytesView))
      try await Task.sleep(for: .milliseconds(100))
    }
    try await Task.sleep(for: .seconds(1))

    #expect(await harness.waitForLeader() == leader, "the leader lost its leadership")
    #expect(await Self.term(harness, leader) == term, "an election happened")
    #expect(await Self.term(harness, other) == term)
    #expect(
      await harness.metric("raftdb_peer_messages_refused_total", leader, labels: #"reason="second_leader""#)
        >= 1)
    #expect(
      await harness.metric(
        "raftdb_peer_messages_refused_total", leader, labels: #"reason="unsolicited_response""#) >= 2)
    #expect(
      await harness.metric(
        "raftdb_peer_messages_refused_total", other, labels: #"reason="term_out_of_range""#) >= 2)
    #expect(harness.log(leader).contains("refused a peer message"))
    #expect(try await Self.clusterServes(harness, key: "after", value: "ok"))

    // The follower never adopted the impossible term, so it restarts (it used to trap on every start).
    harness.kill(other)
    try harness.start(other)
    #expect(await harness.eventually { await Self.term(harness, other) >= term })
    #expect(try await Self.clusterServes(harness, key: "after-restart", value: "ok"))
  }

  /// Items 5, 6 and 8: partial 64 MiB frames before any hello hold no memory; idle connections stop
  /// at the limit and close at the hello deadline while HTTP keeps answering; invented ids with
  /// advertised addresses create no outbound peers.
  @Test func thePeerPortHoldsNoStrangerResources() async throws {
    let harness = try ClusterHarness(extraArguments: ["-max-peer-connections", "16"])
    let names = ["node01", "node02", "node03"]
    let leader = try await harness.startCluster(names)
    let id = try await harness.memberIDs()
    let rssBefore = harness.residentBytes(leader) ?? 0

    // 20 connections each announcing a 64 MiB frame and sending 60 KB of it.
    var announcing: [RawSocket] = []
    for _ in 0..<20 {
      let socket = try RawSocket(port: harness.spec(leader).raftPort)
      try? socket.send(bytes: [0x04, 0x00, 0x00, 0x00, 1] + [UInt8](repeating: 0xAB, count: 60_000))
      announcing.append(socket)
    }
    for socket in announcing { #expect(socket.closedByPeer()) }
    let rssAfter = harness.residentBytes(leader) ?? 0
    #expect(rssAfter - rssBefore < 64 << 20, "resident memory grew from \(rssBefore) to \(rssAfter)")

    // 40 idle connections: beyond 16, each newcomer evicts the oldest still without a hello; the
    // rest close at the hello deadline.
    var idle: [RawSocket] = []
    for _ in 0..<40 {
      idle.append(try RawSocket(port: harness.spec(leader).raftPort, receiveTimeoutSeconds: 10))
    }
    #expect(await harness.status(leader) != nil, "HTTP stopped answering")
    let closed = idle.filter { $0.closedByPeer() }.count
    #expect(closed == 40, "\(closed) of 40 idle connections were closed within 10 s")
    #expect(
      await harness.metric(
        "raftdb_peer_connections_refused_total", leader, labels: #"reason="hello_timeout""#) >= 1)
    #expect(
      await harness.metric(
        "raftdb_peer_connections_refused_total", leader, labels: #"reason="evicted_before_hello""#)
        >= 1)

    // 200 hellos with invented ids and addresses: no outbound peer is created for any of them.
    for k in 0..<200 {
      var buffer = ByteBufferAllocator().buffer(capacity: 128)
      buffer.writeHello(
        WireFormat.Hello(
          version: WireFormat.protocolVersion, kind: .messages, from: NodeID(UInt64(0xF00_0000 + k)),
          to: id(leader), advertisedAddress: "127.0.0.1:\(1000 + k)"))
      let socket = try RawSocket(port: harness.spec(leader).raftPort)
      try? socket.send(bytes: Array(buffer.readableBytesView))
      _ = socket.closedByPeer()
    }
    try await Task.sleep(for: .milliseconds(300))
    #expect(await harness.metric("raftdb_peer_outbound_peers", leader) == 2)
    #expect(try await Self.clusterServes(harness, key: "k", value: "still serving"))
  }

  /// Item 6: a leader that runs out of file descriptors (here: its limit lowered to what it has open
  /// plus a few, then connections opened until accepting fails) logs it, counts it and hands its
  /// leadership to another member instead of sitting on the cluster.
  @Test func aLeaderThatCannotAcceptHandsOverLeadership() async throws {
    let harness = try ClusterHarness(extraArguments: ["-max-peer-connections", "1000"])
    let names = ["node01", "node02", "node03"]
    let leader = try await harness.startCluster(names)
    let pid = try #require(harness.pid(leader))
    let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
    #expect(open > 0)
    let limit = open + 8
    #expect(Self.setDescriptorLimit(pid: pid, limit) == 0, "prlimit failed")
    defer { _ = Self.setDescriptorLimit(pid: pid, 65_536) }
    var sockets: [RawSocket] = []
    for _ in 0..<32 {
      if let socket = try? RawSocket(port: harness.spec(leader).raftPort) { sockets.append(socket) }
    }
    let handedOver = await harness.eventually(timeout: .seconds(15)) {
      await harness.metric(
        "raftdb_peer_connections_refused_total", leader, labels: #"reason="accept_failed""#) >= 1
        || harness.log(leader).contains("cannot accept")
    }
    #expect(handedOver, "no accept failure seen")
    let newLeader = await harness.waitForLeader(among: names.filter { $0 != leader }, timeout: .seconds(15))
    #expect(newLeader != nil, "leadership stayed with the node that cannot accept")
    #expect(harness.log(leader).contains("handing leadership to"))
    sockets.removeAll()
    _ = Self.setDescriptorLimit(pid: pid, 65_536)
    #expect(try await Self.clusterServes(harness, key: "k", value: "v"))
  }

  /// `prlimit --pid P --nofile=N:N` (util-linux).
  static func setDescriptorLimit(pid: Int32, _ limit: Int) -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
    process.arguments = ["--pid", "\(pid)", "--nofile=\(limit):\(limit)"]
    guard (try? process.run()) != nil else { return -1 }
    process.waitUntilExit()
    return process.terminationStatus
  }

  /// Item 7: a snapshot stream from a stranger, or claiming the leader's id but too large for the
  /// disk's free space less the reserve, is refused before anything is written.
  @Test func aSnapshotStreamCannotFillTheDisk() async throws {
    let harness = try ClusterHarness(extraArguments: ["-snapshot-disk-reserve-bytes", "\(UInt64(1) << 50)"])
    let names = ["node01", "node02", "node03"]
    let leader = try await harness.startCluster(names)
    let id = try await harness.memberIDs()
    let follower = names.first { $0 != leader }!
    let term = await Self.term(harness, follower)
    let metadata = SnapshotMetadata(
      index: 1_000_000, term: term, configuration: Configuration(voters: names.map(id)))
    func offer(from sender: NodeID, size: UInt64) throws -> RawSocket {
      let socket = try RawSocket(port: harness.spec(follower).raftPort)
      let install = Message(from: sender, to: id(follower), term: term, body: .installSnapshot(metadata))
      // The node may refuse and reset the connection before the whole offer is sent.
      try? socket.send(
        bytes: Self.stream(from: sender, to: id(follower), kind: .snapshot, [install]) { buffer in
          buffer.writeFrame(.snapshotBegin) { body in
            body.writeSnapshotMetadata(metadata)
            body.writeInteger(size)
          }
          buffer.writeFrame(.snapshotChunk) { $0.writeBytes([UInt8](repeating: 0x5A, count: 1 << 20)) }
        })
      return socket
    }
    #expect(try offer(from: NodeID(0xBAD), size: 1 << 40).closedByPeer())
    #expect(
      try offer(from: id(leader), size: 1 << 40).closedByPeer(), "2^40 bytes exceeds -max-snapshot-bytes"
    )
    #expect(try offer(from: id(leader), size: 2 << 20).closedByPeer(), "no room beside the reserve")
    let snapshots = harness.spec(follower).directory.appendingPathComponent("snapshots")
    let files = (try? FileManager.default.contentsOfDirectory(atPath: snapshots.path)) ?? []
    #expect(files.allSatisfy { !$0.hasSuffix(".tmp") }, "\(files)")
    #expect(
      await harness.metric(
        "raftdb_peer_connections_refused_total", follower, labels: #"reason="snapshot_too_large""#)
        >= 2)
    #expect(try await Self.clusterServes(harness, key: "k", value: "v"))
  }
}

extension Sequence {
  func asyncMap<T>(_ transform: (Element) async -> T) async -> [T] {
    var results: [T] = []
    for element in self { results.append(await transform(element)) }
    return results
  }
}
