import Foundation
import KVStore
import Logging
import NIOCore
import Raft
import RaftDBAPI
import RaftDBClient
import RaftDBService
import RaftStorage
import RaftTransport

public enum StartupError: Error, CustomStringConvertible {
  case wrongNode(directory: String, owner: String, requested: String)
  case badAddress(String)
  /// Raft state without `identity` or `node-name`: no build leaves that, so the files were lost.
  case missingIdentity(directory: String)

  public var description: String {
    switch self {
    case .wrongNode(let directory, let owner, let requested):
      "data directory \(directory) belongs to node \(owner), not \(requested); use -id \(owner) or another directory"
    case .badAddress(let address): "bad address \(address); expected host:port"
    case .missingIdentity(let directory):
      "data directory \(directory) holds Raft state but no identity file (nor the node-name of older builds), "
        + "so this node cannot know which member it is; restore the file from a backup, or remove the member "
        + "(POST /remove), move the directory aside and join the node again"
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
    storageOptions.preallocateSegments = options.walPreallocate
    storageOptions.snapshotsRetained = options.snapshotsRetained
    let testsFaults = options.testDiskFullAfterWALWrites != nil || options.testFsyncDelayMillis != nil
    let faults = testsFaults ? FaultInjectingFileSystem() : nil
    let storage = try FileStorage(
      directory: options.dataDirectory, options: storageOptions, fileSystem: faults ?? POSIXFileSystem(),
      logger: logger)
    let recoveryStart = ContinuousClock.now
    let recovered = try storage.recover()
    let recoveredAfter = ContinuousClock.now - recoveryStart
    if let faults, let writes = options.testDiskFullAfterWALWrites {
      logger.warning("test fault: WAL write \(writes) from now on fails with ENOSPC")
      faults.fail(.write, onCall: max(1, writes), errno: ENOSPC, pathContains: "/wal/", sticky: true)
    }
    if let faults, let delay = options.testFsyncDelayMillis {
      logger.warning("test fault: every fsync from now on first sleeps \(delay) ms")
      faults.syncDelay = .milliseconds(delay)
      // Markers for SlowFsyncTests, which reads from the log whether the writer thread was inside a
      // slow fsync when the node loop began receiving a snapshot.
      faults.onDelayedSync = { path, began in
        logger.warning("test fault: slow fsync \(began ? "began" : "ended") \(path)")
      }
    }
    for warning in recovered.warnings { logger.warning("recovery: \(warning)") }
    var stored = recovered.stored
    let hasState = !stored.entries.isEmpty || stored.snapshot.index > 0 || stored.hardState.term > 0
    let me = try await establishIdentity(
      options: options, storage: storage, hasState: hasState, logger: logger)

    let metrics = NodeMetrics()
    let machine = options.makeStateMachine()
    if let snapshot = recovered.snapshot {
      let source = try storage.snapshots.open(snapshot)
      defer { source.close() }
      let restoreStart = ContinuousClock.now
      try machine.restore(appliedIndex: snapshot.index) { try source.read(maxBytes: 1 << 20) }
      logger.info(
        "restored the state machine from the local snapshot",
        metadata: [
          "index": "\(snapshot.index)", "duration": "\(ContinuousClock.now - restoreStart)",
          "storage_recovery": "\(recoveredAfter)",
        ])
    }

    var mustJoin = false
    if !hasState {
      if options.join == nil {
        let member = Member(id: me.memberID, isVoter: true, context: options.identity.encoded())
        stored = RaftNode.bootstrap(Configuration(members: [member]))
        try storage.write(PersistBatch(entries: stored.entries, hardState: stored.hardState))
        try storage.sync()
        logger.info("bootstrapped a new cluster with this node as its only member")
      } else {
        mustJoin = true
      }
    } else if options.join != nil {
      logger.info("this node already has cluster state; ignoring -join")
    }

    var raftOptions = RaftOptions(id: me.memberID, randomSeed: UInt64.random(in: 1...UInt64.max))
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
      machine: machine, stored: me, onFatalError: onFatalError)
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
      // A local snapshot of a cluster that outgrew this build stops it here.
      node.stopIfTheClusterOutgrewThisBuild()
      return node.roleName(node.raft.currentRole)
    }.get()
    logger.info(
      "raftdb node started",
      metadata: [
        "id": "\(options.name)", "member_id": "\(me.memberID.hex)",
        "cluster_id": "\(clusterText(me.clusterID))",
        "haddr": "\(options.httpAddress)", "raddr": "\(options.raftAddress)",
        "data": "\(options.dataDirectory)", "role": "\(mustJoin ? "joining" : role)",
        "term": "\(stored.hardState.term)", "last_index": "\(raft.lastIndex)",
      ])
    if mustJoin, let seed = options.join {
      Task { await node.joinCluster(via: seed) }
    }
    node.startClusterVersionMonitor()
    return node
  }

  /// Asks the cluster (through any member; redirects lead to the leader) to add this node, retrying
  /// with back-off until admitted. The node's identity is already on disk, so every attempt (and
  /// every attempt after a restart) asks for the same member id.
  func joinCluster(via seed: String) async {
    let client = RaftDBClient(endpoints: [seed])
    let outcome = await Self.retrying(
      "join via \(seed)", logger: logger,
      running: { (try? await self.loop.submit { !self.stopped }.get()) ?? false }
    ) { attempt -> Result<Int, JoinRefused> in
      // Before the configuration reaches it, a joining node hears only from the members the
      // seed names (a stranger cannot feed it a log or a term meanwhile).
      let view = SeedView(try await client.status())
      if let seedCluster = view.clusterID, seedCluster != 0, clusterID != 0, seedCluster != clusterID {
        return .failure(
          JoinRefused(seed: seed, seedCluster: seedCluster, ours: clusterID, directory: options.dataDirectory)
        )
      }
      try await loop.submit {
        for (name, id) in view.members { self.knownNames[id] = name }
        self.publishNames()
        self.raft.trustWhileJoining(view.members.map(\.id))
        self.publishAdmission()
      }.get()
      // A legacy id goes unnamed: it is what a leader gives a join without one, and a leader of a
      // build before member ids refuses the field.
      try await client.join(
        id: options.name, raftAddress: options.raftAddress, httpAddress: options.httpAddress,
        voter: !options.joinAsLearner,
        memberID: id == MemberInfo.legacyNodeID(forName: options.name) ? nil : id.hex)
      return .success(attempt)
    }
    await client.close()
    switch outcome {
    case .success(let attempts)?:
      logger.info("joined the cluster via \(seed)", metadata: ["attempts": "\(attempts)"])
    case .failure(let refused)?:
      loop.execute { self.fail("\(refused)") }
    case nil:
      break
    }
  }
}

/// Why a join cannot go on: the seed is in another cluster than the one the data directory records
/// (an earlier start asked that cluster to add this node).
struct JoinRefused: Error, CustomStringConvertible {
  var seed: String
  var seedCluster: UInt64
  var ours: UInt64
  var directory: String

  var description: String {
    "the seed \(seed) belongs to cluster \(HexID.format(seedCluster)), but this node's data directory "
      + "\(directory) records cluster \(HexID.format(ours)), which an earlier start asked to add it; use "
      + "-join with a member of that cluster, or an empty data directory to join another one"
  }
}
