import ArgumentParser
import EtcdGRPC
import Foundation
import KVStore
import Logging
import NIOCore
import NIOPosix
import RaftDBAPI
import RaftDBClient
import RaftDBServer
import RaftDBService
import ServiceLifecycle
import Synchronization

@main
struct RaftDBCommand: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "raftdb",
    abstract: "A distributed key-value store on Raft (the course's raftdb).",
    discussion: """
      With an empty data directory and no -join, raftdb bootstraps a one-node cluster and leads \
      it. With -join it asks that member (any member; redirects lead to the leader) to add it, \
      retrying until admitted. A restart with existing state needs no -join. Flags take one dash \
      (-id, as in the course) or two (--id).

      Three nodes on one machine, as in lesson 20 (each command copies and pastes whole):
        raftdb -id node01 -haddr localhost:8091 -raddr localhost:8089 ~/node01
        raftdb -id node02 -haddr localhost:8092 -raddr localhost:8090 \\
          -join localhost:8091 ~/node02
        raftdb -id node03 -haddr localhost:8093 -raddr localhost:8087 \\
          -join localhost:8091 ~/node03
        curl -XPOST localhost:8091/key -d '{"foo": "bar"}' -L
        curl -XGET 'localhost:8092/key/foo?level=consistent' -L
      """,
    version: BuildVersion.description(of: "raftdb"))

  @Option(name: .raftdb("id"), help: "This node's name (default: its raft address).")
  var id: String?

  @Option(name: .raftdb("haddr"), help: "HTTP API address, host:port.")
  var haddr = "localhost:8091"

  @Option(
    name: .raftdb("gaddr"),
    help:
      "etcd's v3 gRPC API is served on -haddr; this adds a listener of its own for it, host:port."
  )
  var gaddr: String?

  @Option(name: .raftdb("raddr"), help: "Raft address for peers, host:port.")
  var raddr = "localhost:8089"

  @Option(
    name: .raftdb("raft-listen"),
    help: "Listen for peers here instead of on -raddr (which is still what peers are told), host:port.")
  var raftListen: String?

  @Option(name: .raftdb("join"), help: "HTTP address of a member to join through on first start.")
  var join: String?

  @Flag(name: .raftdb("learner"), help: "Join as a learner (a non-voting member).")
  var learner = false

  @Option(name: .raftdb("heartbeat-interval"), help: "Heartbeat interval (one Raft tick), milliseconds.")
  var heartbeatInterval = 100

  @Option(
    name: .raftdb("election-timeout"), help: "Minimum election timeout, milliseconds (randomized up to 2x).")
  var electionTimeout = 1000

  @Option(name: .raftdb("snapshot-threshold"), help: "Applied entries between snapshots.")
  var snapshotThreshold: UInt64 = 10_000

  @Option(
    name: .raftdb("snapshot-threshold-bytes"),
    help: "Applied bytes between snapshots (whichever threshold is reached first).")
  var snapshotThresholdBytes = 32 << 20

  @Option(
    name: .raftdb("auto-compaction-mode"),
    help:
      "What -auto-compaction-retention counts: periodic (a duration) or revision (revisions), as etcd's flag."
  )
  var autoCompactionMode = "periodic"

  @Option(
    name: .raftdb("auto-compaction-retention"),
    help: """
      History the leader keeps, compacting the rest through the log (0: off). Periodic mode: a \
      duration (1h, 30m, 90s, or a bare number of hours); every tenth of it (at most every 6 \
      minutes) the leader samples the revision, and it compacts to the one current that long ago, \
      every retention (at most hourly). Revision mode: a number of revisions; every 5 minutes the \
      leader compacts to the current revision minus it.
      """)
  var autoCompactionRetention = "0"

  @Option(name: .raftdb("snapshot-retain"), help: "Snapshot files to keep.")
  var snapshotRetain = 2

  @Option(name: .raftdb("log-retain"), help: "Log entries kept below a snapshot for lagging followers.")
  var logRetain: UInt64 = 5_000

  @Option(name: .raftdb("log-retain-bytes"), help: "Bound on the bytes of those retained entries.")
  var logRetainBytes = 16 << 20

  @Option(
    name: .raftdb("wal-segment-bytes"),
    help:
      "Size of a write-ahead log segment, bytes (at least 1 MiB). Each is reserved on disk when created (see -wal-preallocate), so a new data directory takes this much at once."
  )
  var walSegmentBytes = 64 << 20

  @Option(
    name: .raftdb("wal-preallocate"),
    help:
      "Reserve each WAL segment's whole size when it is created (true or false). Preallocated segments make each fsync cheaper; false saves disk on small or test nodes."
  )
  var walPreallocate = true

  @Option(name: .raftdb("max-key-bytes"), help: "Largest key accepted, bytes.")
  var maxKeyBytes = 4096

  @Option(name: .raftdb("max-value-bytes"), help: "Largest value accepted, bytes.")
  var maxValueBytes = 1 << 20

  @Option(
    name: .raftdb("max-response-bytes"),
    help: "Most bytes of keys and values in one answer (a range, a transaction's gets); beyond it, 413.")
  var maxResponseBytes = 64 << 20

  @Option(name: .raftdb("max-request-bytes"), help: "Largest request body accepted, bytes.")
  var maxRequestBytes = 8 << 20

  @Option(
    name: .raftdb("max-connections"),
    help:
      "Most client connections open at once; a newcomer to a full table evicts the one waiting longest for its client."
  )
  var maxConnections = 4096

  @Option(
    name: .raftdb("http-idle-timeout"),
    help: "Close a client connection that sends nothing for this long while no request is pending, seconds.")
  var httpIdleTimeout = 60

  @Option(name: .raftdb("max-peer-connections"), help: "Most inbound peer connections open at once.")
  var maxPeerConnections = 256

  @Option(name: .raftdb("max-snapshot-bytes"), help: "Largest snapshot accepted from the leader, bytes.")
  var maxSnapshotBytes: UInt64 = 64 << 30

  @Option(
    name: .raftdb("snapshot-disk-reserve-bytes"),
    help: "Free space to keep beyond a snapshot being received; a larger snapshot is refused, bytes.")
  var snapshotDiskReserveBytes: UInt64 = 256 << 20
  @Option(
    name: .raftdb("http-header-timeout"),
    help:
      "Answer 408 and close when a request's head is not complete this long after its first byte, seconds (not restarted by further bytes)."
  )
  var httpHeaderTimeout = 10

  @Option(
    name: .raftdb("http-body-timeout"),
    help: "Answer 408 and close when a request's body is not complete this long after its head, seconds.")
  var httpBodyTimeout = 30

  @Option(
    name: .raftdb("max-buffered-request-bytes"),
    help:
      "Request body bytes held in memory across all client connections; a request beyond it gets 503. At least -max-request-bytes."
  )
  var maxBufferedRequestBytes = 256 << 20

  @Option(name: .raftdb("request-timeout"), help: "How long a request may wait for commit, milliseconds.")
  var requestTimeout = 5000

  @Option(
    name: .raftdb("watch-progress-notify-interval"),
    help: "How often watches that ask for progress notifications get the current revision, milliseconds.")
  var watchProgressNotifyInterval = 600_000

  @Option(name: .raftdb("max-watchers"), help: "Most watches this member serves at once.")
  var maxWatchers = 100_000

  @Option(
    name: .raftdb("max-watch-buffer-bytes"),
    help: "Undelivered event bytes one watch may hold before it is cancelled as too slow.")
  var maxWatchBufferBytes = 4 << 20

  @Option(name: .raftdb("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
  var logLevel = "info"

  @Argument(help: "Data directory.")
  var dataDirectory = "./raftdb-data"

  func validate() throws {
    guard splitHostPort(haddr) != nil else { throw ValidationError("-haddr must be host:port, got \(haddr)") }
    guard splitHostPort(raddr) != nil else { throw ValidationError("-raddr must be host:port, got \(raddr)") }
    if let gaddr, splitHostPort(gaddr) == nil {
      throw ValidationError("-gaddr must be host:port, got \(gaddr)")
    }
    if let join, endpointHostPort(join) == nil {
      throw ValidationError("-join must be host:port or http://host:port, got \(join)")
    }
    if let raftListen, splitHostPort(raftListen) == nil {
      throw ValidationError("-raft-listen must be host:port, got \(raftListen)")
    }
    guard Logger.Level(rawValue: logLevel) != nil else {
      throw ValidationError("unknown -log-level \(logLevel)")
    }
    guard heartbeatInterval > 0, electionTimeout >= 2 * heartbeatInterval else {
      throw ValidationError("-election-timeout must be at least twice -heartbeat-interval")
    }
    guard snapshotThreshold > 0, snapshotThresholdBytes > 0, snapshotRetain >= 1, logRetainBytes >= 0,
      maxKeyBytes > 0, maxValueBytes > 0, maxRequestBytes > 0, maxResponseBytes > 0, maxConnections > 0,
      httpIdleTimeout > 0, httpHeaderTimeout > 0, httpBodyTimeout > 0, maxPeerConnections > 0,
      maxSnapshotBytes > 0, watchProgressNotifyInterval > 0, maxWatchers > 0, maxWatchBufferBytes > 0
    else {
      throw ValidationError("limits and thresholds must be positive")
    }
    // An append must carry at least one whole value, and the leader's uncommitted log (64 MiB) must
    // hold one append: beyond this the core's own bounds would contradict each other.
    guard maxValueBytes <= 16 << 20 else {
      throw ValidationError("-max-value-bytes must be at most \(16 << 20) (16 MiB), got \(maxValueBytes)")
    }
    do throws(AutoCompactionFlagError) {
      _ = try AutoCompactionPolicy.parse(mode: autoCompactionMode, retention: autoCompactionRetention)
    } catch {
      throw ValidationError(error.description)
    }
    guard walSegmentBytes >= 1 << 20 else {
      throw ValidationError("-wal-segment-bytes must be at least \(1 << 20) (1 MiB), got \(walSegmentBytes)")
    }
    guard maxBufferedRequestBytes >= maxRequestBytes else {
      throw ValidationError("-max-buffered-request-bytes must be at least -max-request-bytes")
    }
  }

  func run() async throws {
    let level = Logger.Level(rawValue: logLevel)!
    LoggingSystem.bootstrap { label in
      var handler = StreamLogHandler.standardError(label: label)
      handler.logLevel = level
      return handler
    }
    let name = id ?? raddr
    var logger = Logger(label: "raftdb")
    logger[metadataKey: "node"] = "\(name)"

    var options = ServerOptions(
      name: name, httpAddress: haddr, raftAddress: raddr, dataDirectory: dataDirectory)
    options.join = join
    options.raftListenAddress = raftListen
    options.joinAsLearner = learner
    options.heartbeatIntervalMillis = heartbeatInterval
    options.electionTimeoutMillis = electionTimeout
    options.snapshotThreshold = snapshotThreshold
    options.autoCompaction = try? AutoCompactionPolicy.parse(
      mode: autoCompactionMode, retention: autoCompactionRetention)
    options.snapshotsRetained = snapshotRetain
    options.snapshotThresholdBytes = snapshotThresholdBytes
    options.logRetainedEntries = logRetain
    options.logRetainedBytes = logRetainBytes
    options.walSegmentBytes = walSegmentBytes
    options.walPreallocate = walPreallocate
    options.maxKeyBytes = maxKeyBytes
    options.maxValueBytes = maxValueBytes
    options.maxRequestBytes = maxRequestBytes
    options.maxResponseBytes = maxResponseBytes
    options.maxConnections = maxConnections
    options.httpIdleTimeoutSeconds = httpIdleTimeout
    options.maxPeerConnections = maxPeerConnections
    options.maxSnapshotBytes = maxSnapshotBytes
    options.snapshotDiskReserveBytes = snapshotDiskReserveBytes
    options.httpHeaderTimeoutSeconds = httpHeaderTimeout
    options.httpBodyTimeoutSeconds = httpBodyTimeout
    options.maxBufferedRequestBytes = maxBufferedRequestBytes
    options.requestTimeoutMillis = requestTimeout
    options.watchProgressNotifyIntervalMillis = watchProgressNotifyInterval
    options.maxWatchers = maxWatchers
    options.maxWatchBufferBytes = maxWatchBufferBytes
    options.logLevel = level
    if let writes = ProcessInfo.processInfo.environment["RAFTDB_TEST_DISK_FULL_AFTER_WAL_WRITES"] {
      // Test only (see ServerOptions.testDiskFullAfterWALWrites).
      options.testDiskFullAfterWALWrites = Int(writes)
    }
    if let delay = ProcessInfo.processInfo.environment["RAFTDB_TEST_FSYNC_DELAY_MS"] {
      // Test only (see ServerOptions.testFsyncDelayMillis).
      options.testFsyncDelayMillis = Int(delay)
    }
    if let check = ProcessInfo.processInfo.environment["RAFTDB_TEST_AUTO_COMPACTION_CHECK_MS"] {
      // Test only (see ServerOptions.autoCompactionCheckMillis).
      guard let millis = Int(check), millis > 0 else {
        throw ValidationError(
          "RAFTDB_TEST_AUTO_COMPACTION_CHECK_MS must be a positive number, not \"\(check)\"")
      }
      options.autoCompactionCheckMillis = millis
    }
    if let version = ProcessInfo.processInfo.environment["RAFTDB_TEST_SUPPORTED_CLUSTER_VERSION"] {
      // Test only (see ServerOptions.testSupportedClusterVersion).
      guard let parsed = UInt32(version), (ClusterVersion.initial...ClusterVersion.latest).contains(parsed)
      else {
        throw ValidationError(
          "RAFTDB_TEST_SUPPORTED_CLUSTER_VERSION must be \(ClusterVersion.initial) to \(ClusterVersion.latest), not \"\(version)\""
        )
      }
      options.testSupportedClusterVersion = parsed
    }

    let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
    // Every listen address first: a taken port must not leave a bootstrapped data directory behind.
    try await ListenAddress.requireAvailable(
      [
        ListenAddress(flag: "-haddr", address: haddr),
        raftListen.map { ListenAddress(flag: "-raft-listen", address: $0) }
          ?? ListenAddress(flag: "-raddr", address: raddr),
      ] + (gaddr.map { [ListenAddress(flag: "-gaddr", address: $0)] } ?? []), group: group)
    try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
    let fatal = FatalExit()
    let node = try await RaftDBNode.start(options: options, logger: logger, networkGroup: group) { reason in
      fatal.exit(reason)
    }
    let (host, port) = splitHostPort(haddr)!
    let http2 = HTTP2Handoff()
    let server = try await RaftDBHTTPServer.start(
      node: node, host: host, port: port, group: group, logger: logger, http2: http2)
    fatal.answerBeforeExiting(server)
    var serving: [ServiceGroupConfiguration.ServiceConfiguration] = [
      .init(service: NodeService(node: node)), .init(service: HTTPService(server: server)),
    ]
    // etcd's gRPC API on the HTTP port (connections that open with HTTP/2's preface), and on
    // -gaddr too when asked. The services stop in reverse order: gRPC first, then HTTP.
    let grpcLimits = EtcdGRPCServer.Limits(
      maxRequestBytes: maxRequestBytes, maxIdleTime: .seconds(Int64(httpIdleTimeout)))
    let shared = try await EtcdGRPCServer.start(
      service: node.service, sharedPort: server.localAddress?.port ?? port, group: group, limits: grpcLimits,
      logger: logger)
    http2.install(shared.acceptConnection)
    serving.append(.init(service: GRPCService(server: shared, handoff: http2)))
    if let gaddr, let (gHost, gPort) = splitHostPort(gaddr) {
      let grpc = try await EtcdGRPCServer.start(
        service: node.service, host: gHost, port: gPort, group: group, limits: grpcLimits, logger: logger)
      serving.append(.init(service: GRPCService(server: grpc, handoff: nil)))
    }
    let services = ServiceGroup(
      configuration: .init(
        services: serving,
        gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await services.run()
    logger.info("raftdb stopped")
  }
}

/// Crash-only: after a storage failure the process exits (status 70) and a supervisor restarts it;
/// recovery from disk is the one well-tested path back. The node has already failed every request
/// in flight (503, the write's outcome unknown); exiting at once would drop those answers with the
/// connections, so the HTTP server is first shut down gracefully, which writes each connection's
/// pending answer and closes it, for at most `drainSeconds`.
final class FatalExit: Sendable {
  static let drainSeconds = 2.0
  private let state = Mutex<(server: RaftDBHTTPServer?, exiting: Bool)>((nil, false))

  func answerBeforeExiting(_ server: RaftDBHTTPServer) { state.withLock { $0.server = server } }

  /// Called on the node's event loop: never blocks it.
  func exit(_ reason: String) {
    FileHandle.standardError.write(Data("raftdb: fatal: \(reason)\n".utf8))
    let (server, first) = state.withLock { state in
      defer { state.exiting = true }
      return (state.server, !state.exiting)
    }
    guard first else { return }
    guard let server else { Foundation.exit(70) }
    let drained = DispatchSemaphore(value: 0)
    Task.detached {
      await server.shutdown(gracePeriod: .seconds(Self.drainSeconds))
      drained.signal()
    }
    Thread.detachNewThread {
      _ = drained.wait(timeout: .now() + Self.drainSeconds + 1)
      Foundation.exit(70)
    }
  }
}

/// Keeps the node alive for the service group and stops it cleanly on shutdown (after the HTTP
/// server, which the group stops first).
struct NodeService: Service {
  let node: RaftDBNode

  func run() async throws {
    try? await gracefulShutdown()
    await node.shutdown()
  }
}

/// Serves the HTTP API until shutdown, then drains it (before the node stops: the group stops
/// services in reverse order).
struct HTTPService: Service {
  let server: RaftDBHTTPServer

  func run() async throws {
    try? await gracefulShutdown()
    await server.shutdown()
  }
}

/// Serves etcd's gRPC API until shutdown, then lets the calls in flight finish (before the node
/// stops).
struct GRPCService: Service {
  let server: EtcdGRPCServer
  let handoff: HTTP2Handoff?

  func run() async throws {
    try? await gracefulShutdown()
    handoff?.uninstall()
    await server.shutdown()
  }
}

extension NameSpecification {
  /// Accepts `-name` (the course's Go flags) and `--name`.
  static func raftdb(_ name: String) -> NameSpecification {
    [.customLong(name, withSingleDash: true), .customLong(name)]
  }
}
