import KVStore

/// What a watcher asks for (etcd's WatchCreateRequest, less what belongs to one gRPC stream).
public struct WatchRequest: Hashable, Sendable {
  public var range: KeyRange
  /// The first revision to deliver: 0 (or below) for "from the next change"; a revision in the
  /// past replays the history from it; one in the future waits for it.
  public var startRevision: Int64
  public var prevKV: Bool
  /// etcd's NOPUT filter: deliver no puts.
  public var filterPuts: Bool
  /// etcd's NODELETE filter: deliver no deletes.
  public var filterDeletes: Bool
  /// Send a progress notification (the current revision, no events) on every progress tick during
  /// which the watcher got no events.
  public var progressNotify: Bool

  public init(
    range: KeyRange, startRevision: Int64 = 0, prevKV: Bool = false, filterPuts: Bool = false,
    filterDeletes: Bool = false, progressNotify: Bool = false
  ) {
    self.range = range
    self.startRevision = startRevision
    self.prevKV = prevKV
    self.filterPuts = filterPuts
    self.filterDeletes = filterDeletes
    self.progressNotify = progressNotify
  }
}

/// A watcher's number, unique within one hub (one member's lifetime).
public typealias WatchID = Int64

/// One message to a watcher. The events of one revision are never split across messages, and
/// messages reach a watcher in revision order.
public struct WatchResponse: Hashable, Sendable {
  public enum Kind: Hashable, Sendable {
    /// The first message of every watch.
    case created
    case events
    /// No events: every change up to `revision` has been delivered.
    case progress
    /// The last message of a watch the hub ended. `compactRevision` is set (non-zero) when the
    /// history the watcher needed was compacted: it must start again after that revision.
    /// Otherwise `resumeRevision` is where a new watch continues without a gap or a repeat.
    case canceled(reason: String, compactRevision: Int64, resumeRevision: Int64)
  }

  public var watchID: WatchID
  public var kind: Kind
  /// Every change the watch covers at or below this revision has been delivered, in this message or
  /// an earlier one (etcd's header revision).
  public var revision: Int64
  public var events: [WatchEvent]

  public init(watchID: WatchID, kind: Kind, revision: Int64, events: [WatchEvent] = []) {
    self.watchID = watchID
    self.kind = kind
    self.revision = revision
    self.events = events
  }

  public var isCancel: Bool {
    if case .canceled = kind { return true }
    return false
  }

  /// What the message costs held in memory, roughly: its keys and values and a fixed overhead
  /// per event.
  var heldBytes: Int {
    var total = 64
    for event in events {
      total += 96 + event.kv.key.count + event.kv.value.count
      if let previous = event.prevKV { total += 64 + previous.key.count + previous.value.count }
    }
    return total
  }
}

/// The bounds of one hub. Together they bound its memory: at most `maxWatchers` watchers, each
/// with at most `maxPendingBytesPerWatcher` of undelivered messages (plus the one revision that
/// tipped it over), and no more than `maxPendingBytes` in all.
public struct WatchLimits: Hashable, Sendable {
  public var maxWatchers = 100_000
  /// A watcher whose undelivered messages exceed this is too slow: it is cancelled, telling it the
  /// revision to resume from, so that it holds up neither writes nor other watchers.
  public var maxPendingBytesPerWatcher = 4 << 20
  /// Undelivered messages of every watcher together; beyond it, the watchers furthest behind are
  /// cancelled first.
  public var maxPendingBytes = 512 << 20
  /// A watcher replaying history gets at most this many events per message (more only when one
  /// revision holds more), and a replay step looks at most at `catchUpScannedChanges` changes.
  public var catchUpEvents = 1_000
  public var catchUpScannedChanges = 10_000

  public init() {}
}

public enum WatchError: Error, Hashable, Sendable, CustomStringConvertible {
  case tooManyWatchers(limit: Int)
  case emptyKey

  public var description: String {
    switch self {
    case .tooManyWatchers(let limit): "too many watchers on this member (limit \(limit)); retry later"
    case .emptyKey: "etcdserver: key is not provided"
    }
  }
}
