import KVStore
import Logging
import NIOCore

/// What `-auto-compaction-mode` and `-auto-compaction-retention` ask for: etcd's flags of the same
/// names, with etcd's meanings (its `server/etcdserver/api/v3compactor`).
public enum AutoCompactionPolicy: Sendable, Equatable, CustomStringConvertible {
  /// Keep the history of the last `retentionNanoseconds`: compact to the revision that was current
  /// that long ago.
  case periodic(retentionNanoseconds: Int64)
  /// Keep the last `retainedRevisions` revisions: compact to the current revision minus them.
  case revision(retainedRevisions: Int64)

  public var mode: String {
    switch self {
    case .periodic: "periodic"
    case .revision: "revision"
    }
  }

  public var description: String {
    switch self {
    case .periodic(let nanoseconds): "periodic, retention \(Self.formatted(nanoseconds))"
    case .revision(let revisions): "revision, retention \(revisions) revisions"
    }
  }

  /// The policy the flags name, or nil for a retention of 0 (off, the default). In periodic mode
  /// the retention is a duration as Go writes one ("1h", "30m", "90s", "1h30m", "2.5s", "500ms") or
  /// a bare whole number of hours (etcd: "if no time unit is provided and compaction mode is
  /// 'periodic', the unit defaults to hour"); in revision mode a whole number of revisions.
  public static func parse(mode: String, retention: String) throws(AutoCompactionFlagError) -> Self? {
    switch mode {
    case "periodic":
      let nanoseconds: Int64
      if let hours = Int64(retention) {
        guard hours >= 0, hours <= Int64.max / 3_600_000_000_000 else { throw .retention(retention, mode) }
        nanoseconds = hours * 3_600_000_000_000
      } else {
        guard let parsed = parseDuration(retention), parsed >= 0 else { throw .retention(retention, mode) }
        nanoseconds = parsed
      }
      return nanoseconds == 0 ? nil : .periodic(retentionNanoseconds: nanoseconds)
    case "revision":
      guard let revisions = Int64(retention), revisions >= 0 else { throw .retention(retention, mode) }
      return revisions == 0 ? nil : .revision(retainedRevisions: revisions)
    default:
      throw .mode(mode)
    }
  }

  /// A Go duration (`time.ParseDuration`): one or more decimal numbers, each with a unit of ns, us
  /// (or µs), ms, s, m or h, and an optional sign first. Nil if it is not one or overflows.
  static func parseDuration(_ text: String) -> Int64? {
    var rest = Substring(text)
    var negative = false
    if let sign = rest.first, sign == "-" || sign == "+" {
      negative = sign == "-"
      rest = rest.dropFirst()
    }
    if rest == "0" { return 0 }
    guard !rest.isEmpty else { return nil }
    var total = 0.0
    while !rest.isEmpty {
      let number = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
      rest = rest.dropFirst(number.count)
      let unit = rest.prefix { !($0.isASCII && ($0.isNumber || $0 == ".")) }
      rest = rest.dropFirst(unit.count)
      guard !number.isEmpty, number != ".", number.filter({ $0 == "." }).count <= 1,
        let value = Double(number)
      else { return nil }
      let unitNanoseconds: Double
      switch unit {
      case "ns": unitNanoseconds = 1
      case "us", "µs", "μs": unitNanoseconds = 1e3
      case "ms": unitNanoseconds = 1e6
      case "s": unitNanoseconds = 1e9
      case "m": unitNanoseconds = 60e9
      case "h": unitNanoseconds = 3_600e9
      default: return nil
      }
      total += value * unitNanoseconds
    }
    guard total < 9.2e18 else { return nil }
    return Int64(total.rounded()) * (negative ? -1 : 1)
  }

  static func formatted(_ nanoseconds: Int64) -> String {
    if nanoseconds % 3_600_000_000_000 == 0 { return "\(nanoseconds / 3_600_000_000_000)h" }
    if nanoseconds % 60_000_000_000 == 0 { return "\(nanoseconds / 60_000_000_000)m" }
    if nanoseconds % 1_000_000 == 0 { return "\(Double(nanoseconds / 1_000_000) / 1_000)s" }
    return "\(nanoseconds)ns"
  }
}

/// A flag value `AutoCompactionPolicy.parse` refuses, with what to write instead.
public enum AutoCompactionFlagError: Error, CustomStringConvertible {
  case mode(String)
  case retention(String, String)

  public var description: String {
    switch self {
    case .mode(let mode): "-auto-compaction-mode must be periodic or revision, not \"\(mode)\""
    case .retention(let retention, let mode) where mode == "revision":
      "-auto-compaction-retention in revision mode must be a whole number of revisions (0: off), not \"\(retention)\""
    case .retention(let retention, _):
      "-auto-compaction-retention in periodic mode must be a duration such as 1h, 30m or 90s, or a whole number of hours (0: off), not \"\(retention)\""
    }
  }
}

/// The leader's compactor: when to compact the history, decided on this leader's monotonic clock
/// and carried out as a replicated `.compact(revision:)`, so that every replica drops the same
/// history at the same point of the log. A pure schedule (the node feeds it the time and the
/// store's revisions; `AutoCompactionTests` drives it with a fake clock).
///
/// Periodic mode follows etcd's `Periodic.Run` step for step: it samples the store revision at
/// start and then every tenth of the retention (at most every 6 minutes), keeping the last
/// retention/interval + 1 samples; it compacts once the retention has passed since it started, and
/// after that every retention (at most every hour), to the oldest sample it holds, which was taken
/// about one retention ago (a little more after the first compaction, as in etcd). After a failed
/// proposal it tries again at the next sample.
///
/// Revision mode follows etcd's `Revision.Run`: every 5 minutes (`checkInterval`) it compacts to
/// the current revision minus the retention, if that is above 0 and has not been compacted yet.
///
/// Where this differs from etcd:
/// - etcd's compactor keeps sampling on followers (paused, it still records revisions), so a new
///   leader may compact at once from samples it took as a follower. Here a compactor belongs to a
///   leader's term: a new leader starts with no samples and waits a whole retention (periodic) or
///   check interval (revision) before its first compaction. History is then kept longer, never
///   shorter, than the retention.
/// - etcd proposes a compaction even when its target is already compacted (and takes the
///   `ErrCompacted` answer as success); this compactor counts such a target as done without
///   proposing it, so an idle cluster's log gets no compaction entries.
struct AutoCompactor {
  let policy: AutoCompactionPolicy
  /// The term this compactor was started in.
  let leadingTerm: UInt64
  /// Periodic: etcd's retry interval (a tenth of the retention, at most 6 minutes). Revision: its
  /// 5-minute check.
  let wakeInterval: TimeAmount
  /// Periodic: how many samples are kept (etcd's `getRetentions`).
  let samplesKept: Int
  /// Periodic: how long after the last compaction the next one is due: the whole retention before
  /// the first, then the retention capped at an hour (etcd's `baseInterval`).
  private(set) var dueAfter: TimeAmount
  let compactInterval: TimeAmount
  /// Periodic: revisions sampled, oldest first.
  private(set) var samples: [Int64] = []
  private(set) var nextWake: NIODeadline
  /// Periodic: when the last compaction was proposed (or found done), or the start.
  private(set) var lastSuccess: NIODeadline
  /// Periodic: `lastSuccess` before the compaction in flight, restored if its proposal fails.
  private var lastSuccessBeforeProposal: NIODeadline?
  /// The last target proposed (etcd's `prev` in revision mode), until its proposal fails.
  private(set) var lastProposed: Int64 = 0

  static let revisionCheckInterval = TimeAmount.minutes(5)

  init(
    policy: AutoCompactionPolicy, term: UInt64, now: NIODeadline, revision: Int64,
    revisionCheckInterval: TimeAmount = Self.revisionCheckInterval
  ) {
    self.policy = policy
    leadingTerm = term
    lastSuccess = now
    switch policy {
    case .periodic(let nanoseconds):
      let period = TimeAmount.nanoseconds(nanoseconds)
      compactInterval = min(period, .hours(1))
      wakeInterval = .nanoseconds(max(1, compactInterval.nanoseconds / 10))
      samplesKept = Int(period.nanoseconds / wakeInterval.nanoseconds) + 1
      dueAfter = period
      samples = [revision]
    case .revision:
      wakeInterval = revisionCheckInterval
      compactInterval = revisionCheckInterval
      samplesKept = 0
      dueAfter = revisionCheckInterval
    }
    nextWake = now + wakeInterval
  }

  /// Called on every tick with the store's current and compacted revisions: the revision to
  /// propose a compaction at, if it is time for one.
  mutating func tick(now: NIODeadline, revision: Int64, compactRevision: Int64) -> Int64? {
    guard now >= nextWake else { return nil }
    nextWake = now + wakeInterval
    switch policy {
    case .periodic:
      // etcd samples at the top of its loop, after the compaction attempt of the same wake-up.
      defer {
        samples.append(revision)
        if samples.count > samplesKept { samples.removeFirst(samples.count - samplesKept) }
      }
      guard now - lastSuccess >= dueAfter else { return nil }
      dueAfter = compactInterval
      let target = samples[0]
      let previous = lastSuccess
      lastSuccess = now
      // Already compacted (etcd would propose it and take ErrCompacted as success).
      guard target > max(compactRevision, lastProposed) else { return nil }
      lastSuccessBeforeProposal = previous
      lastProposed = target
      return target
    case .revision(let retained):
      // etcd skips a target equal to its last one (`prev`); one at or below the compacted
      // revision is skipped too.
      let target = revision - retained
      guard target > 0, target > max(compactRevision, lastProposed) else { return nil }
      lastProposed = target
      return target
    }
  }

  /// The proposal of a compaction this compactor asked for failed (not committed): it may be
  /// proposed again, and periodic mode tries at its next sample, as etcd retries after its retry
  /// interval.
  mutating func proposalFailed() {
    if let previous = lastSuccessBeforeProposal { lastSuccess = previous }
    lastSuccessBeforeProposal = nil
    lastProposed = 0
  }
}

extension RaftDBNode {
  /// Called every tick on the loop: runs the compactor while this node leads a cluster whose
  /// version has the multi-version store, starting it afresh in every term, and proposes what it
  /// asks for. A follower holds no compactor.
  func autoCompactionTick() {
    guard let policy = options.autoCompaction else { return }
    guard raft.isLeader, !stopped, machine.clusterVersion >= ClusterVersion.multiVersion else {
      autoCompactor = nil
      return
    }
    let now = NIODeadline.now()
    let store = machine.store
    if autoCompactor?.leadingTerm != raft.currentTerm {
      autoCompactor = AutoCompactor(
        policy: policy, term: raft.currentTerm, now: now, revision: store.revision,
        revisionCheckInterval: .milliseconds(Int64(options.autoCompactionCheckMillis)))
      logger.info(
        "auto compaction: started for this term",
        metadata: [
          "policy": "\(policy)", "term": "\(raft.currentTerm)", "store_revision": "\(store.revision)",
        ])
    }
    guard
      let target = autoCompactor!.tick(
        now: now, revision: store.revision, compactRevision: store.compactRevision)
    else { return }
    let term = raft.currentTerm
    let metadata: Logger.Metadata = [
      "revision": "\(target)", "mode": "\(policy.mode)", "policy": "\(policy)",
      "compacted_revision": "\(store.compactRevision)", "store_revision": "\(store.revision)",
    ]
    logger.info("auto compaction: proposing", metadata: metadata)
    metrics.autoCompactions.increment()
    proposeInternally(.compact(revision: target)).whenComplete { result in
      switch result {
      case .success(let outcome):
        if case .failed(let error, _) = outcome.result {
          // Compacted meanwhile (etcd's ErrCompacted, which it takes as success), or refused.
          self.logger.info(
            "auto compaction: not needed", metadata: metadata.merging(["answer": "\(error)"]) { $1 })
        } else {
          self.logger.info("auto compaction: applied", metadata: metadata)
        }
      case .failure(let error):
        self.logger.warning(
          "auto compaction: not applied; trying again",
          metadata: metadata.merging(["error": "\(error)"]) { $1 })
        if self.autoCompactor?.leadingTerm == term { self.autoCompactor?.proposalFailed() }
      }
    }
  }
}
