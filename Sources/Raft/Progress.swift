/// The leader's view of one follower (etcd's progress tracker): how far its log is known to match,
/// what to send next, and how much may be in flight.
struct Progress {
  enum State: Equatable {
    /// The leader does not know where the follower's log diverges: one append at a time, waiting
    /// for the answer (or the next heartbeat) before sending another.
    case probe
    /// The follower is in step: appends are pipelined optimistically, bounded by `inflights`.
    case replicate
    /// The follower needs the snapshot at `index` before anything from the log can help it.
    case snapshot(index: UInt64)
  }

  let id: NodeID
  var isVoter: Bool
  /// The highest index known to match the leader's log (and be durable on the follower).
  var match: UInt64 = 0
  /// The next index to send.
  var next: UInt64
  private(set) var state: State = .probe
  /// In the probe state: an append was sent and no answer has come since.
  var probeSent = false
  var inflights: Inflights
  /// Whether anything was heard from the follower since the last check-quorum round.
  var recentlyActive = false
  /// The newest heartbeat round the follower acknowledged in the current term.
  var ackedReadRound: UInt64 = 0
  /// The commit index last sent in an append, so that a caught-up follower still learns of new
  /// commits promptly (its reads and applies wait on it).
  var sentCommit: UInt64 = 0
  /// Replicate state: `match` as of the previous heartbeat answer, and how many answers in a row
  /// found it unchanged while entries were outstanding. A pipeline whose messages were lost shows up
  /// this way and falls back to probing.
  var matchAtLastHeartbeat: UInt64 = 0
  var stalledHeartbeats = 0

  init(id: NodeID, isVoter: Bool, next: UInt64, maxInflightMessages: Int, maxInflightBytes: Int) {
    self.id = id
    self.isVoter = isVoter
    self.next = next
    inflights = Inflights(capacity: maxInflightMessages, maxBytes: maxInflightBytes)
  }

  var isPaused: Bool {
    switch state {
    case .probe: probeSent
    case .replicate: inflights.isFull
    case .snapshot: true
    }
  }

  mutating func becomeProbe() {
    if case .snapshot(let index) = state {
      next = max(match + 1, index + 1)
    } else {
      next = match + 1
    }
    state = .probe
    probeSent = false
    inflights.reset()
  }

  mutating func becomeReplicate() {
    state = .replicate
    next = match + 1
    probeSent = false
    stalledHeartbeats = 0
    matchAtLastHeartbeat = match
    inflights.reset()
  }

  /// A snapshot stream failed: nothing beyond `match` is known to have arrived. The next probe starts
  /// after `match`, which (being compacted away) makes the leader send a snapshot again — once the
  /// follower has answered a heartbeat, so an unreachable peer is not hammered.
  mutating func snapshotFailed() {
    state = .probe
    next = match + 1
    probeSent = true
    inflights.reset()
  }

  mutating func becomeSnapshot(index: UInt64) {
    state = .snapshot(index: index)
    probeSent = false
    inflights.reset()
  }

  /// Records an acknowledgement through `index`; returns whether `match` advanced.
  mutating func acknowledge(through index: UInt64) -> Bool {
    let advanced = index > match
    if advanced { match = index }
    next = max(next, index + 1)
    probeSent = false
    inflights.free(through: index)
    return advanced
  }

  /// Records that an append ending at `lastIndex` was sent.
  mutating func sent(lastIndex: UInt64, bytes: Int) {
    switch state {
    case .replicate:
      guard lastIndex >= next else { return }  // An empty append only carries the commit index.
      next = lastIndex + 1
      inflights.add(lastIndex: lastIndex, bytes: bytes)
    case .probe:
      probeSent = true
    case .snapshot:
      preconditionFailure("no appends are sent to a follower awaiting a snapshot")
    }
  }

  /// Handles a rejection of the append at `rejectedIndex`; `probeFrom` is where the leader wants
  /// to probe next. Returns false when the rejection is stale (answers an older append).
  mutating func rejected(at rejectedIndex: UInt64, probeFrom: UInt64) -> Bool {
    if state == .replicate {
      // Pipelined appends may be rejected out of order; only a rejection above `match` is news.
      guard rejectedIndex > match else { return false }
      becomeProbe()
      next = max(min(probeFrom, next), match + 1)
      return true
    }
    // In probe (or snapshot) state only the answer to the latest probe counts.
    guard next - 1 == rejectedIndex else { return false }
    next = max(min(rejectedIndex, probeFrom), match + 1)
    probeSent = false
    return true
  }

  var stateDescription: String {
    switch state {
    case .probe: "probe"
    case .replicate: "replicate"
    case .snapshot(let index): "snapshot(\(index))"
    }
  }
}

/// A bounded window of append messages in flight to one follower, freed as acknowledgements arrive.
/// A ring buffer so that steady-state replication allocates nothing.
struct Inflights {
  private var lastIndexes: [UInt64]
  private var sizes: [Int]
  private var start = 0
  private(set) var count = 0
  private(set) var bytes = 0
  let capacity: Int
  let maxBytes: Int

  init(capacity: Int, maxBytes: Int) {
    precondition(capacity > 0)
    self.capacity = capacity
    self.maxBytes = maxBytes
    lastIndexes = Array(repeating: 0, count: capacity)
    sizes = Array(repeating: 0, count: capacity)
  }

  var isFull: Bool { count == capacity || bytes >= maxBytes }

  mutating func add(lastIndex: UInt64, bytes size: Int) {
    precondition(count < capacity, "inflight window overflow")
    let slot = (start + count) % capacity
    precondition(
      count == 0 || lastIndexes[(slot + capacity - 1) % capacity] < lastIndex, "inflights out of order")
    lastIndexes[slot] = lastIndex
    sizes[slot] = size
    count += 1
    bytes += size
  }

  mutating func free(through index: UInt64) {
    while count > 0 && lastIndexes[start] <= index {
      bytes -= sizes[start]
      start = (start + 1) % capacity
      count -= 1
    }
  }

  mutating func reset() {
    start = 0
    count = 0
    bytes = 0
  }
}
