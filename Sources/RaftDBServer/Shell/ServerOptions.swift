import KVStore
import KVWatch
import Logging
import RaftDBService

/// Everything a node is configured with; `raftdb --help` documents each flag.
public struct ServerOptions: Sendable {
  public var name: String
  public var httpAddress: String
  public var raftAddress: String
  /// Where to listen for peers, when that differs from the address advertised to them (behind NAT,
  /// a container port mapping, or a proxy). Nil: listen on `raftAddress`.
  public var raftListenAddress: String?
  public var dataDirectory: String
  /// Another member's HTTP address to ask for admission on first start.
  public var join: String?
  /// Join as a learner (non-voting member).
  public var joinAsLearner = false

  /// One tick of the Raft core; heartbeats go out every tick.
  public var heartbeatIntervalMillis = 100
  public var electionTimeoutMillis = 1000
  /// How often the leader checkpoints the remaining TTL of every lease through the log, so that a
  /// new leader neither restarts nor cuts short a lease (etcd's lease checkpoints; see
  /// RaftDBNode+Leases.swift).
  public var leaseCheckpointMillis = 5_000
  /// Automatic compaction of the multi-version store's history by the leader (etcd's
  /// `--auto-compaction-mode` and `--auto-compaction-retention`; RaftDBNode+AutoCompaction.swift).
  /// Nil: off, the default.
  public var autoCompaction: AutoCompactionPolicy?
  /// How often revision mode checks whether to compact: etcd's 5 minutes. Test only, shorter
  /// (the raftdb executable reads it from `RAFTDB_TEST_AUTO_COMPACTION_CHECK_MS`).
  public var autoCompactionCheckMillis = 300_000
  /// How often watchers that asked for progress notifications are sent the current revision when
  /// they had no events (etcd's `--experimental-watch-progress-notify-interval`, 10 minutes).
  public var watchProgressNotifyIntervalMillis = 600_000
  /// Watchers served at once by this member, and the bytes of undelivered events one may hold before
  /// it is cancelled as too slow (see `WatchLimits`).
  public var maxWatchers = 100_000
  public var maxWatchBufferBytes = 4 << 20
  /// Take a snapshot after this many applied entries, or this many bytes of applied entries (the
  /// log between snapshots lives in memory, so a count alone would not bound it), and keep this many
  /// snapshot files.
  public var snapshotThreshold: UInt64 = 10_000
  public var snapshotThresholdBytes = 32 << 20
  public var snapshotsRetained = 2
  /// Entries kept below a snapshot so that briefly lagging followers catch up without one, bounded
  /// by count and by bytes.
  public var logRetainedEntries: UInt64 = 5_000
  public var logRetainedBytes = 16 << 20
  public var walSegmentBytes = 64 << 20
  /// Reserve each WAL segment's whole size when it is created (`FileStorageOptions`): a new data
  /// directory takes `walSegmentBytes` of disk at once.
  public var walPreallocate = true

  public var maxKeyBytes = 4096
  public var maxValueBytes = 1 << 20
  /// Largest request body accepted, in bytes.
  public var maxRequestBytes = 8 << 20
  /// Most bytes of keys and values in one answer (a range, a transaction's gets): beyond it the
  /// request is refused with 413 and the client pages with `limit` (`KVService.maxResponseBytes`).
  public var maxResponseBytes = 64 << 20
  /// Open client connections at most. A newcomer to a full table evicts the connection that has
  /// waited longest for its own client; when every connection has a request at the node, the
  /// newcomer is closed.
  public var maxConnections = 4096
  /// Client connections that send nothing for this long (while not awaiting an answer) are closed.
  public var httpIdleTimeoutSeconds = 60
  /// Inbound peer connections open at once; more are closed as they arrive (docs/SECURITY.md).
  public var maxPeerConnections = 256
  /// The largest snapshot this node accepts from its leader.
  public var maxSnapshotBytes: UInt64 = 64 << 30
  /// Free space kept on the data directory's file system beyond a snapshot being received: a
  /// snapshot that would eat into it is refused before any of it is written.
  public var snapshotDiskReserveBytes: UInt64 = 256 << 20
  /// A request's head must be complete this long after its first byte (408 and close otherwise).
  public var httpHeaderTimeoutSeconds = 10
  /// A request's body must be complete this long after its head (408 and close otherwise).
  public var httpBodyTimeoutSeconds = 30
  /// Request bodies held in memory across all client connections; a request that would exceed it
  /// is answered 503. 256 MiB holds 32 bodies of the default 8 MiB limit at once, four times the
  /// uncommitted log a leader accepts (`maxUncommittedBytes`), so legitimate large writes are not
  /// refused for it, while 4,096 connections trickling 8 MiB bodies can no longer hold 32 GiB.
  public var maxBufferedRequestBytes = 256 << 20
  /// How long a client request may wait for commit or a read confirmation.
  public var requestTimeoutMillis = 5000
  /// Proposals refused (503) beyond this many bytes of uncommitted log.
  public var maxUncommittedBytes = 64 << 20
  public var logLevel: Logger.Level = .info
  /// Test only (the raftdb executable reads it from `RAFTDB_TEST_DISK_FULL_AFTER_WAL_WRITES`): the
  /// WAL write this many writes after startup, and every one after it, fails with ENOSPC as on a
  /// full disk, so that process-level tests can watch a node answer and stop. Nil in production.
  public var testDiskFullAfterWALWrites: Int?
  /// Test only (`RAFTDB_TEST_FSYNC_DELAY_MS`): every fsync, once the node has started, first sleeps
  /// this many milliseconds (a slow disk), so that tests can show no event loop waits on one.
  public var testFsyncDelayMillis: Int?
  /// Test only (`RAFTDB_TEST_SUPPORTED_CLUSTER_VERSION`): the node stands in for an older build that
  /// supports cluster versions up to this one: it says so on `GET /version` and rejects newer
  /// commands as that build would (the mixed-version tests).
  public var testSupportedClusterVersion: UInt32?
  /// How often a leader asks every member which cluster version its build supports, to raise the
  /// cluster's once all of them support more (etcd asks every few seconds too).
  public var clusterVersionCheckMillis = 2_000

  public init(name: String, httpAddress: String, raftAddress: String, dataDirectory: String) {
    self.name = name
    self.httpAddress = httpAddress
    self.raftAddress = raftAddress
    self.dataDirectory = dataDirectory
  }

  public var electionTimeoutTicks: Int { max(2, electionTimeoutMillis / max(1, heartbeatIntervalMillis)) }

  public var identity: MemberInfo {
    MemberInfo(name: name, raftAddress: raftAddress, httpAddress: httpAddress)
  }
}

extension ServerOptions {
  /// The limits the state machine applies. Every member of a cluster must run with the same ones: a
  /// replica's verdict on an entry must follow from the log alone.
  public var kvLimits: KVLimits {
    var limits = KVLimits()
    limits.maxKeyBytes = maxKeyBytes
    limits.maxValueBytes = maxValueBytes
    return limits
  }

  public var watchLimits: WatchLimits {
    var limits = WatchLimits()
    limits.maxWatchers = maxWatchers
    limits.maxPendingBytesPerWatcher = maxWatchBufferBytes
    limits.maxPendingBytes = max(limits.maxPendingBytes, maxWatchBufferBytes)
    return limits
  }

  /// An empty state machine as this node runs it: its limits, and the cluster versions its build
  /// supports (lower for a test stand-in of an older build). Every machine the node builds, at
  /// start-up or to install a snapshot, comes from here.
  func makeStateMachine() -> KVStateMachine {
    KVStateMachine(
      limits: kvLimits, supportedClusterVersion: testSupportedClusterVersion ?? ClusterVersion.latest)
  }
}
