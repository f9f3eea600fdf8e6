import NIOCore
import Testing

@testable import RaftDBServer

/// The leader's compactor on a fake clock: the flags' parsing and etcd's schedules, replayed as
/// etcd's own tests (`v3compactor/periodic_test.go`, `revision_test.go`) replay them.
@Suite struct AutoCompactionTests {
  static let hour: Int64 = 3_600_000_000_000

  @Test func theFlagsParseAsEtcdsDo() throws {
    #expect(try AutoCompactionPolicy.parse(mode: "periodic", retention: "0") == nil)
    #expect(try AutoCompactionPolicy.parse(mode: "periodic", retention: "0s") == nil)
    #expect(try AutoCompactionPolicy.parse(mode: "revision", retention: "0") == nil)
    #expect(
      try AutoCompactionPolicy.parse(mode: "periodic", retention: "1")
        == .periodic(retentionNanoseconds: Self.hour))
    #expect(
      try AutoCompactionPolicy.parse(mode: "periodic", retention: "72")
        == .periodic(retentionNanoseconds: 72 * Self.hour))
    #expect(
      try AutoCompactionPolicy.parse(mode: "periodic", retention: "1h")
        == .periodic(retentionNanoseconds: Self.hour))
    #expect(
      try AutoCompactionPolicy.parse(mode: "periodic", retention: "30m")
        == .periodic(retentionNanoseconds: Self.hour / 2))
    #expect(
      try AutoCompactionPolicy.parse(mode: "periodic", retention: "90s")
        == .periodic(retentionNanoseconds: 90_000_000_000))
    #expect(
      try AutoCompactionPolicy.parse(mode: "periodic", retention: "1h30m")
        == .periodic(retentionNanoseconds: 3 * Self.hour / 2))
    #expect(
      try AutoCompactionPolicy.parse(mode: "periodic", retention: "2.5s")
        == .periodic(retentionNanoseconds: 2_500_000_000))
    #expect(
      try AutoCompactionPolicy.parse(mode: "periodic", retention: "500ms")
        == .periodic(retentionNanoseconds: 500_000_000))
    #expect(
      try AutoCompactionPolicy.parse(mode: "revision", retention: "1000")
        == .revision(retainedRevisions: 1000))
    for (mode, retention) in [
      ("periodic", "1x"), ("periodic", "-1h"), ("periodic", "-2"), ("periodic", "h"), ("periodic", ""),
      ("periodic", "1..5s"), ("revision", "1h"), ("revision", "-5"), ("revision", "1.5"), ("hourly", "1"),
    ] {
      #expect(throws: AutoCompactionFlagError.self, "\(mode) \(retention)") {
        try AutoCompactionPolicy.parse(mode: mode, retention: retention)
      }
    }
  }

  /// Drives a compactor wake-up by wake-up, the store's revision growing by one at each (etcd's
  /// fake revision getter); returns the revision it compacts at on each wake-up, or nil.
  static func run(
    _ compactor: inout AutoCompactor, from start: NIODeadline, wakes: ClosedRange<Int>,
    revision: (Int) -> Int64,
    compactRevision: inout Int64
  ) -> [Int: Int64] {
    var compactions: [Int: Int64] = [:]
    for wake in wakes {
      let now = start + .nanoseconds(compactor.wakeInterval.nanoseconds * Int64(wake))
      // A tick just before the wake-up does nothing.
      #expect(
        compactor.tick(now: now - .nanoseconds(1), revision: revision(wake), compactRevision: compactRevision)
          == nil)
      if let target = compactor.tick(now: now, revision: revision(wake), compactRevision: compactRevision) {
        compactions[wake] = target
        compactRevision = target
      }
    }
    return compactions
  }

  /// etcd's TestPeriodicHourly: a 2-hour retention samples every 6 minutes, first compacts after
  /// 2 hours to the first sample, and then every hour to the sample taken 2 h 6 min before.
  @Test func periodicHourly() {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    var compactor = AutoCompactor(
      policy: .periodic(retentionNanoseconds: 2 * Self.hour), term: 1, now: start, revision: 1)
    #expect(compactor.wakeInterval == .minutes(6) && compactor.samplesKept == 21)
    var compacted: Int64 = 0
    let compactions = Self.run(
      &compactor, from: start, wakes: 1...50, revision: { Int64($0 + 1) }, compactRevision: &compacted)
    #expect(compactions == [20: 1, 30: 10, 40: 20, 50: 30])
  }

  /// etcd's TestPeriodicMinutes: a 5-minute retention samples every 30 s and compacts every 5
  /// minutes.
  @Test func periodicMinutes() {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    var compactor = AutoCompactor(
      policy: .periodic(retentionNanoseconds: Self.hour / 12), term: 1, now: start, revision: 1)
    #expect(compactor.wakeInterval == .seconds(30) && compactor.samplesKept == 11)
    var compacted: Int64 = 0
    let compactions = Self.run(
      &compactor, from: start, wakes: 1...60, revision: { Int64($0 + 1) }, compactRevision: &compacted)
    #expect(compactions == [10: 1, 20: 10, 30: 20, 40: 30, 50: 40, 60: 50])
  }

  /// An idle store is not compacted again, and a failed proposal is tried again at the next
  /// wake-up.
  @Test func periodicSkipsWhatIsCompactedAndRetriesAFailure() {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    var compactor = AutoCompactor(
      policy: .periodic(retentionNanoseconds: Self.hour / 12), term: 1, now: start, revision: 100)
    var compacted: Int64 = 0
    var compactions = Self.run(
      &compactor, from: start, wakes: 1...30, revision: { _ in 100 }, compactRevision: &compacted)
    #expect(compactions == [10: 100])
    // The revision moves again: the first compaction waits for a sample above the compacted one.
    compactions = Self.run(
      &compactor, from: start, wakes: 31...50, revision: { Int64(100 + $0 - 30) }, compactRevision: &compacted
    )
    #expect(compactions == [50: 109])
    // Its proposal fails: the next wake-up proposes again, not an interval later.
    compactor.proposalFailed()
    compacted = 100
    let retried = Self.run(
      &compactor, from: start, wakes: 51...51, revision: { Int64(100 + $0 - 30) }, compactRevision: &compacted
    )
    #expect(retried == [51: 110])
  }

  /// etcd's TestRevision: every check compacts to the current revision minus the retention, and
  /// never twice to the same one.
  @Test func revisionMode() {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    var compactor = AutoCompactor(policy: .revision(retainedRevisions: 10), term: 1, now: start, revision: 0)
    #expect(compactor.wakeInterval == .minutes(5))
    var compacted: Int64 = 0
    let revisions: [Int: Int64] = [1: 5, 2: 10, 3: 11, 4: 11, 5: 30, 6: 30]
    let compactions = Self.run(
      &compactor, from: start, wakes: 1...6, revision: { revisions[$0]! }, compactRevision: &compacted)
    #expect(compactions == [3: 1, 5: 20])
    var short = AutoCompactor(
      policy: .revision(retainedRevisions: 10), term: 1, now: start, revision: 0,
      revisionCheckInterval: .milliseconds(200))
    #expect(short.tick(now: start + .milliseconds(200), revision: 15, compactRevision: 0) == 5)
  }
}
