import KVStore
import KVWatch
import NIOCore

/// Watches: served by the member the client is connected to, from its own applied history (as etcd
/// serves them), with no hop to the leader. What a member has applied is a prefix of the committed
/// log, so its watchers see committed changes only, in order; a member that lags delivers later.
extension KVService {
  /// Starts a watch; its messages go to `sink` (the first is `created`). The future completes with
  /// the watch's id on `eventLoop`; it fails for an empty or oversized key or range end, or when the
  /// member has as many watchers as it allows.
  public func watch(_ request: WatchRequest, sink: any WatchSink, on eventLoop: any EventLoop)
    -> EventLoopFuture<WatchID>
  {
    guard !request.range.key.isEmpty else {
      return eventLoop.makeFailedFuture(ServiceError.store(.emptyKey))
    }
    for (name, bytes) in [("key", request.range.key), ("range end", request.range.rangeEnd)]
    where bytes.count > limits.maxKeyBytes {
      return eventLoop.makeFailedFuture(
        ServiceError.invalidArgument(
          "watch \(name) of \(bytes.count) bytes exceeds the \(limits.maxKeyBytes)-byte limit"))
    }
    return backend.watches.create(request, sink: sink).flatMapErrorThrowing { error in
      if let error = error as? WatchError, case .tooManyWatchers = error {
        throw ServiceError.unavailable(error.description)
      }
      throw error
    }.hop(to: eventLoop)
  }

  /// Ends a watch (its reader went away or asked).
  public func cancelWatch(_ id: WatchID) { backend.watches.cancel(id) }

  /// Whether a watch's reader can take messages now: while it cannot, they wait (bounded).
  public func setWatchWritable(_ id: WatchID, _ writable: Bool) { backend.watches.setWritable(id, writable) }

  public func requestWatchProgress(_ id: WatchID) { backend.watches.requestProgress(id) }
}
