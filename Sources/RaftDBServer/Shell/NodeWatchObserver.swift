import KVWatch
import Logging
import RaftDBService

/// The watch dispatcher's reports, as metrics and log lines.
struct NodeWatchObserver: WatchObserver {
  let metrics: NodeMetrics
  let logger: Logger

  func watchersChanged(count: Int, pendingBytes: Int) {
    metrics.watchers.record(Int64(count))
    metrics.watchPendingBytes.record(Int64(pendingBytes))
  }

  func delivered(events: Int) { metrics.watchEventsDelivered.increment(by: Int64(events)) }

  func cancelled(_ id: WatchID, reason: String) {
    metrics.watchesCancelled.increment()
    // One line per cancelled watch: the number is bounded by the watchers a member allows.
    logger.warning("watch cancelled", metadata: ["watch": "\(id)", "reason": "\(reason)"])
  }
}
