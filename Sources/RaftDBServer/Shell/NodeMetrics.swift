import CoreMetrics
import NIOConcurrencyHelpers
import Prometheus
import Raft
import RaftTransport

/// The node's metrics, in its own Prometheus registry (so several nodes can live in one test process
/// without a global metrics bootstrap).
final class NodeMetrics: Sendable {
  let registry = PrometheusCollectorRegistry()
  private let factory: PrometheusMetricsFactory
  private let requestCounters = NIOLockedValueBox<[RouteStatus: CoreMetrics.Counter]>([:])
  private let requestTimers = NIOLockedValueBox<[APIRoute: CoreMetrics.Timer]>([:])

  private struct RouteStatus: Hashable {
    var route: APIRoute
    var status: Int
  }

  let term: CoreMetrics.Gauge
  let commitIndex: CoreMetrics.Gauge
  let appliedIndex: CoreMetrics.Gauge
  let isLeader: CoreMetrics.Gauge
  let leaderChanges: CoreMetrics.Counter
  let keys: CoreMetrics.Gauge
  /// The multi-version store's compacted revision, as this member applied it.
  let compactRevision: CoreMetrics.Gauge
  /// Compactions this member's auto-compactor proposed while it led (RaftDBNode+AutoCompaction.swift).
  let autoCompactions: CoreMetrics.Counter
  let fsyncDuration: CoreMetrics.Timer
  let fsyncBatchJobs: CoreMetrics.Recorder
  let snapshotTakeDuration: CoreMetrics.Timer
  let snapshotInstallDuration: CoreMetrics.Timer
  let proposals: CoreMetrics.Counter
  let droppedPeerMessages: CoreMetrics.Gauge
  /// Peers this node keeps an outbound connection to (configured, or a joining node's leader).
  let outboundPeers: CoreMetrics.Gauge
  let openConnections: CoreMetrics.Gauge
  let refusedConnections: CoreMetrics.Counter
  /// Peer messages the core refused (`MessageRefusal`), by reason.
  let refusedPeerMessages: [MessageRefusal: CoreMetrics.Counter]
  /// Peer connections the transport closed or refused (`TransportRefusal`), by reason.
  let refusedPeerConnections: [TransportRefusal.Reason: CoreMetrics.Counter]
  let evictedConnections: CoreMetrics.Counter
  let headerTimeouts: CoreMetrics.Counter
  let bodyTimeouts: CoreMetrics.Counter
  let bufferRefusals: CoreMetrics.Counter
  let bufferedRequestBytes: CoreMetrics.Gauge
  let watchers: CoreMetrics.Gauge
  let watchPendingBytes: CoreMetrics.Gauge
  let watchEventsDelivered: CoreMetrics.Counter
  /// Watches the member ended itself (too slow, or compacted past), not those their clients ended.
  let watchesCancelled: CoreMetrics.Counter

  init() {
    var factory = PrometheusMetricsFactory(registry: registry)
    factory.defaultDurationHistogramBuckets = [
      .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
      .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
      .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
    ]
    self.factory = factory
    term = CoreMetrics.Gauge(label: "raftdb_raft_term", factory: factory)
    commitIndex = CoreMetrics.Gauge(label: "raftdb_raft_commit_index", factory: factory)
    appliedIndex = CoreMetrics.Gauge(label: "raftdb_raft_applied_index", factory: factory)
    isLeader = CoreMetrics.Gauge(label: "raftdb_raft_is_leader", factory: factory)
    leaderChanges = CoreMetrics.Counter(label: "raftdb_raft_leader_changes_total", factory: factory)
    keys = CoreMetrics.Gauge(label: "raftdb_kv_keys", factory: factory)
    compactRevision = CoreMetrics.Gauge(label: "raftdb_mvcc_compact_revision", factory: factory)
    autoCompactions = CoreMetrics.Counter(label: "raftdb_mvcc_auto_compactions_total", factory: factory)
    fsyncDuration = CoreMetrics.Timer(label: "raftdb_wal_fsync_duration_seconds", factory: factory)
    fsyncBatchJobs = CoreMetrics.Recorder(label: "raftdb_wal_fsync_batch_jobs", factory: factory)
    snapshotTakeDuration = CoreMetrics.Timer(label: "raftdb_snapshot_take_duration_seconds", factory: factory)
    snapshotInstallDuration = CoreMetrics.Timer(
      label: "raftdb_snapshot_install_duration_seconds", factory: factory)
    proposals = CoreMetrics.Counter(label: "raftdb_raft_proposals_total", factory: factory)
    droppedPeerMessages = CoreMetrics.Gauge(label: "raftdb_transport_dropped_messages", factory: factory)
    outboundPeers = CoreMetrics.Gauge(label: "raftdb_peer_outbound_peers", factory: factory)
    openConnections = CoreMetrics.Gauge(label: "raftdb_http_open_connections", factory: factory)
    refusedConnections = CoreMetrics.Counter(label: "raftdb_http_refused_connections_total", factory: factory)
    var refusedMessages: [MessageRefusal: CoreMetrics.Counter] = [:]
    for reason in MessageRefusal.all {
      refusedMessages[reason] = CoreMetrics.Counter(
        label: "raftdb_peer_messages_refused_total", dimensions: [("reason", reason.label)], factory: factory)
    }
    refusedPeerMessages = refusedMessages
    var refusedPeers: [TransportRefusal.Reason: CoreMetrics.Counter] = [:]
    for reason in TransportRefusal.Reason.allCases {
      refusedPeers[reason] = CoreMetrics.Counter(
        label: "raftdb_peer_connections_refused_total", dimensions: [("reason", reason.rawValue)],
        factory: factory)
    }
    refusedPeerConnections = refusedPeers
    evictedConnections = CoreMetrics.Counter(label: "raftdb_http_evicted_connections_total", factory: factory)
    headerTimeouts = CoreMetrics.Counter(label: "raftdb_http_header_timeouts_total", factory: factory)
    bodyTimeouts = CoreMetrics.Counter(label: "raftdb_http_body_timeouts_total", factory: factory)
    bufferRefusals = CoreMetrics.Counter(label: "raftdb_http_buffer_refusals_total", factory: factory)
    bufferedRequestBytes = CoreMetrics.Gauge(label: "raftdb_http_buffered_request_bytes", factory: factory)
    watchers = CoreMetrics.Gauge(label: "raftdb_watchers", factory: factory)
    watchPendingBytes = CoreMetrics.Gauge(label: "raftdb_watch_pending_bytes", factory: factory)
    watchEventsDelivered = CoreMetrics.Counter(label: "raftdb_watch_events_delivered_total", factory: factory)
    watchesCancelled = CoreMetrics.Counter(label: "raftdb_watch_cancelled_total", factory: factory)
  }

  /// Counts a request by route and status and records its latency by route.
  func recordRequest(route: APIRoute, status: Int, nanoseconds: Int64) {
    let key = RouteStatus(route: route, status: status)
    let counter = requestCounters.withLockedValue { counters in
      if let counter = counters[key] { return counter }
      let counter = CoreMetrics.Counter(
        label: "raftdb_http_requests_total",
        dimensions: [("route", route.rawValue), ("status", String(status))],
        factory: factory)
      counters[key] = counter
      return counter
    }
    counter.increment()
    let timer = requestTimers.withLockedValue { timers in
      if let timer = timers[route] { return timer }
      let timer = CoreMetrics.Timer(
        label: "raftdb_http_request_duration_seconds", dimensions: [("route", route.rawValue)],
        factory: factory)
      timers[route] = timer
      return timer
    }
    timer.recordNanoseconds(nanoseconds)
  }

  func prometheusText() -> [UInt8] { registry.emitToBuffer() }
}
