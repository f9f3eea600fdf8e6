import Foundation
import KVStore
import Logging
import NIOCore
import Raft
import RaftDBClient
import RaftStorage
import RaftTransport

public enum StartupError: Error, CustomStringConvertible {
  case wrongNode(directory: String, owner: String, requested: String)
  case badAddress(String)

  public var description: String {
    switch self {
    case .wrongNode(let directory, let owner, let requested):
      "data directory \(directory) belongs to node \(owner), not \(requested); use -id \(owner) or another directory"
    case .badAddress(let address): "bad address \(address); expected host:port"
    }
  }
}

extension RaftDBNode {
  /// Opens the data directory, recovers, and starts the node: a first start without `join`
  /// bootstraps a one-node cluster this node leads; a first start with `join` asks that member to add
  /// it (retrying until admitted); a restart continues from disk and ignores `join`.
  public static func start(
    options: ServerOptions, logger: Logger, networkGroup: any EventLoopGroup,
    onFatalError: @escaping @Sendable (String) -> Void = { _ in }
  ) async throws -> RaftDBNode {
    let listenAddress = options.raftListenAddress ?? options.raftAddress
    guard let (raftHost, raftPort) = splitHostPort(listenAddress) else {
      throw StartupError.badAddress(listenAddress)
    }
    var storageOptions = FileStorageOptions()
    storageOptions.segmentSizeBytes = options.walSegmentBytes
    storageOptions.snapshotsRetained = options.snapshotsRetained
    let faults = options.testDiskFullAfterWALWrites.map { _ in FaultInjectingFileSystem() }
    let storage = try FileStorage(
      directory: options.dataDirectory, options: storageOptions, fileSystem: faults ?? POSIXFileSystem(),
      logger: logger)
    let recovered = try storage.recover()
    if let faults, let writes = options.testDiskFullAfterWALWrites {
      logger.warning("test fault: WAL write \(writes) from now on fails with ENOSPC")
      faults.fail(.write, onCall: max(1, writes), errno: ENOSPC, pathContains: "/wal/", sticky: true)
    }
    for warning in recovered.warnings { logger.warning("recovery: \(warning)") }
    try claimDirectory(options)

    let metrics = NodeMetrics()
    var limits = KVLimits()
    limits.maxKeyBytes = options.maxKeyBytes
    limits.maxValueBytes = options.maxValueBytes
    let machine = KVStateMachine(limits: limits)
    if let snapshot = recovered.snapshot {
      let source = try storage.snapshots.open(snapshot)
      defer { source.close() }
      try machine.restore(appliedIndex: snapshot.index) { try source.read(maxBytes: 1 << 20) }
    }

    var stored = recovered.stored
    let hasState = !stored.entries.isEmpty || stored.snapshot.index > 0 || stored.hardState.term > 0
    var mustJoin = false
    if !hasState {
      if options.join == nil {
        let me = Member(id: options.identity.nodeID, isVoter: true, context: options.identity.encoded())
        stored = RaftNode.bootstrap(Configuration(members: [me]))
        try storage.write(PersistBatch(entries: stored.entries, hardState: stored.hardState))
        try storage.sync()
        logger.info("bootstrapped a new cluster with this node as its only member")
      } else {
        mustJoin = true
      }
    } else if options.join != nil {
      logger.info("this node already has cluster state; ignoring -join")
    }

    var raftOptions = RaftOptions(id: options.identity.nodeID, randomSeed: UInt64.random(in: 1...UInt64.max))
    raftOptions.electionTimeoutTicks = options.electionTimeoutTicks
    raftOptions.heartbeatTicks = 1
    raftOptions.maxUncommittedBytes = options.maxUncommittedBytes
    raftOptions.maxMessageBytes = max(1 << 20, options.maxValueBytes * 2 + 64 * 1024)
    raftOptions.maxInflightBytes = max(32 << 20, raftOptions.maxMessageBytes * 4)
    raftOptions.compactionRetainEntries = options.logRetainedEntries
    raftOptions.compactionRetainBytes = options.logRetainedBytes
    let raft = RaftNode(options: raftOptions, stored: stored)

    let writer = StorageWriter(storage: storage) { jobs, seconds in
      metrics.fsyncDuration.recordNanoseconds(Int64(seconds * 1e9))
      metrics.fsyncBatchJobs.record(jobs)
    }
    let node = RaftDBNode(
      options: options, logger: logger, networkGroup: networkGroup, writer: writer, metrics: metrics,
      machine: machine, onFatalError: onFatalError)
    node.makeGroup(core: raft, machine: machine)
    var transportOptions = TransportOptions()
    transportOptions.maxInboundConnections = options.maxPeerConnections
    transportOptions.maxSnapshotBytes = options.maxSnapshotBytes
    node.transport = PeerTransport(
      localID: node.id, advertisedAddress: options.raftAddress, group: node.loopGroup,
      options: transportOptions, logger: logger, delegate: node)
    node.transport.updateAdmission(node.currentAdmission)
    try await node.transport.listen(host: raftHost, port: raftPort)
    writer.start()
    let role: String = try await node.loop.submit {
      node.group.start()
      node.startTicking()
      return node.roleName(node.raft.currentRole)
    }.get()
    logger.info(
      "raftdb node started",
      metadata: [
        "id": "\(options.name)", "haddr": "\(options.httpAddress)", "raddr": "\(options.raftAddress)",
        "data": "\(options.dataDirectory)", "role": "\(mustJoin ? "joining" : role)",
        "term": "\(stored.hardState.term)", "last_index": "\(raft.lastIndex)",
      ])
    if mustJoin, let seed = options.join {
      Task { await node.joinCluster(via: seed) }
    }
    return node
  }

  /// Records which node owns the data directory, and refuses to start as a different one: two
  /// names sharing one Raft log would corrupt the cluster's view of who voted for whom.
  private static func claimDirectory(_ options: ServerOptions) throws {
    let path = options.dataDirectory + "/node-name"
    if let owner = try? String(contentsOfFile: path, encoding: .utf8) {
      let trimmed = owner.trimmingCharacters(in: .whitespacesAndNewlines)
      guard trimmed == options.name else {
        throw StartupError.wrongNode(
          directory: options.dataDirectory, owner: trimmed, requested: options.name)
      }
      return
    }
    try (options.name + "\n").write(toFile: path, atomically: true, encoding: .utf8)
  }

  /// Asks the cluster (through any member; redirects lead to the leader) to add this node, retrying
  /// with back-off until admitted.
  func joinCluster(via seed: String) async {
    let client = RaftDBClient(endpoints: [seed])
    var delay = Duration.milliseconds(200)
    var attempt = 0
    while true {
      let running: Bool = (try? await loop.submit { !self.stopped }.get()) ?? false
      guard running else { return }
      attempt += 1
      do {
        // Before the configuration reaches it, a joining node hears only from the members the
        // seed names (a stranger cannot feed it a log or a term meanwhile).
        let status = try await client.status()
        let members = status.members.map { MemberInfo.nodeID(forName: $0.id) }
        try await loop.submit {
          self.raft.trustWhileJoining(members)
          self.publishAdmission()
        }.get()
        try await client.join(
          id: options.name, raftAddress: options.raftAddress, httpAddress: options.httpAddress,
          voter: !options.joinAsLearner)
        logger.info("joined the cluster via \(seed)", metadata: ["attempts": "\(attempt)"])
        await client.close()
        return
      } catch {
        logger.warning("join via \(seed) failed (attempt \(attempt)): \(error); retrying in \(delay)")
        try? await Task.sleep(for: delay)
        delay = min(delay * 2, .seconds(5))
      }
    }
  }
}
