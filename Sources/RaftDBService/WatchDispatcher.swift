import KVStore
import KVWatch
import NIOCore
import Synchronization

/// Where one watch's messages go. `deliver` is called on the dispatcher's thread and must only
/// hand the messages over (to its connection's event loop, say): the dispatcher serves every
/// watcher of the member from that one thread.
public protocol WatchSink: AnyObject, Sendable {
  func deliver(_ responses: [WatchResponse])
}

/// What the dispatcher reports, for metrics and logs.
public protocol WatchObserver: Sendable {
  /// After each round: how many watchers, and the bytes waiting for slow readers.
  func watchersChanged(count: Int, pendingBytes: Int)
  func delivered(events: Int)
  /// The hub cancelled a watch (too slow, or compacted past it).
  func cancelled(_ id: WatchID, reason: String)
}

/// Runs a member's `WatchHub` on a thread of its own, so that matching and encoding the changes for
/// thousands of watchers never holds up the node's loop: the loop only records the newest store it
/// published (`storePublished`, O(1)), and one round on the dispatcher's loop publishes whatever is
/// newest (so bursts of applies coalesce), replays history for watchers catching up, and hands each
/// watcher's messages to its sink. A round that leaves replay work schedules another, so one long
/// replay cannot starve the live watchers.
public final class WatchDispatcher: @unchecked Sendable {
  // Unchecked: `hub` and `sinks` are confined to `loop` (every entry point hops there); `newest` is
  // behind its own mutex.
  public let loop: any EventLoop
  private var hub: WatchHub
  private var sinks: [WatchID: any WatchSink] = [:]
  private let observer: (any WatchObserver)?
  /// The newest published store not yet taken by a round, and whether a round is scheduled.
  private let newest = Mutex<(store: MVCCStore?, scheduled: Bool)>((nil, false))
  private var progressTask: RepeatedTask?

  /// `progressInterval`: how often watchers that asked for progress notifications get one (etcd's
  /// `--experimental-watch-progress-notify-interval`, 10 minutes by default).
  public init(
    store: MVCCStore, limits: WatchLimits, loop: any EventLoop, progressInterval: TimeAmount,
    observer: (any WatchObserver)? = nil
  ) {
    hub = WatchHub(store: store, limits: limits)
    self.loop = loop
    self.observer = observer
    progressTask = loop.scheduleRepeatedTask(initialDelay: progressInterval, delay: progressInterval) {
      [weak self] _ in
      guard let self else { return }
      self.hub.progressTick()
      self.round()
    }
  }

  public func stop() {
    progressTask?.cancel()
  }

  /// Records the store of a newer applied state; a round on the dispatcher's loop takes it. Called
  /// on the node's loop after every applied batch.
  public func storePublished(_ store: MVCCStore) {
    let schedule = newest.withLock { state in
      state.store = store
      defer { state.scheduled = true }
      return !state.scheduled
    }
    if schedule { loop.execute { self.round() } }
  }

  /// Starts a watch whose messages go to `sink`, beginning with `created`.
  public func create(_ request: WatchRequest, sink: any WatchSink) -> EventLoopFuture<WatchID> {
    loop.submit { () throws(WatchError) -> WatchID in
      self.takeNewest()
      let id = try self.hub.create(request)
      self.sinks[id] = sink
      self.round()
      return id
    }
  }

  /// Ends a watch at its reader's request (its connection closed, or it cancelled it).
  public func cancel(_ id: WatchID) {
    loop.execute {
      self.hub.cancel(id)
      self.sinks[id] = nil
      self.observer?.watchersChanged(count: self.hub.watcherCount, pendingBytes: self.hub.pendingBytes)
    }
  }

  /// Whether the watch's reader can take messages now (its connection's writability).
  public func setWritable(_ id: WatchID, _ writable: Bool) {
    loop.execute {
      self.hub.setWritable(id, writable)
      if writable { self.round() }
    }
  }

  public func requestProgress(_ id: WatchID) {
    loop.execute {
      self.hub.requestProgress(id)
      self.round()
    }
  }

  private func takeNewest() {
    let store = newest.withLock { state in
      defer {
        state.store = nil
        state.scheduled = false
      }
      return state.store
    }
    if let store { hub.publish(store) }
  }

  /// Publishes the newest store, gives watchers catching up their next piece, and hands out what
  /// is ready.
  private func round() {
    takeNewest()
    hub.catchUp()
    var events = 0
    for (id, responses) in hub.takeDeliveries() {
      guard let sink = sinks[id] else { continue }
      for response in responses {
        events += response.events.count
        if case .canceled(let reason, _, _) = response.kind {
          sinks[id] = nil
          observer?.cancelled(id, reason: reason)
        }
      }
      sink.deliver(responses)
    }
    if events > 0 { observer?.delivered(events: events) }
    observer?.watchersChanged(count: hub.watcherCount, pendingBytes: hub.pendingBytes)
    if hub.hasCatchUpWork { loop.execute { self.round() } }
  }
}
