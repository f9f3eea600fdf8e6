import Foundation
import NIOHTTP1
import RaftDBClient
import Synchronization
import Testing

/// No event loop waits on the disk (issue 12, item 5): a node whose every fsync takes seconds (a
/// fault-injecting file system, `RAFTDB_TEST_FSYNC_DELAY_MS`) begins receiving a snapshot on its
/// node loop, and keeps answering there, while its writer thread is inside one of those fsyncs.
/// Before the storage lock was split from the snapshot files (4a02f12), the loop took that lock to
/// begin receiving a snapshot and waited out the writer thread's fsync.
///
/// The scenario is arranged, not hoped for. The slow node comes back behind a compacted log and
/// behind a newer term: the first message of the new term (from the leader, or the answer to its
/// pre-vote) makes it persist the term, a slow fsync, and the snapshot the leader sends once it
/// learns how far behind the node is arrives while that fsync is still in flight (in the first
/// second or two of ten). The slow node's file system logs a marker as each slow fsync begins and
/// ends, so the verdict is read off the order of its log, not off a clock:
/// - "receiving snapshot" between a "began" and its "ended": the loop did not wait (pass);
/// - "receiving snapshot" only after that "ended", although the leader had begun sending it at
///   least a second before the fsync ended: the loop waited for the disk (fail, however loaded the
///   machine);
/// - the snapshot arrived before any slow fsync began, or the leader sent it only after the fsync
///   had ended: the scenario did not happen, and it runs again in a new cluster (at most three
///   times). A loop that waits for the disk produces neither, so a retry cannot hide it.
/// Second, `/status` (answered on the node loop) is polled back to back on the slow node and on a
/// normal follower over the same window, each request giving up after 2 s: the slow node must
/// answer during the fsync after the snapshot began, and its longest time without an answer may
/// exceed the normal node's by less than half the delay (load slows both; a loop that waited misses
/// by most of a delay). If the slow node's HTTP API did not answer at all before that fsync ended,
/// nothing was measured; the attempt prints the node's log and runs again (a fresh-clone CI run
/// once saw this on a loaded machine; a start-up that waits for the disk would do it every time).
///
/// Checked both ways: with the old locking planted back (the loop's snapshot open, begin and abort
/// under the storage lock again) it failed 4 runs out of 4, each on both counts: the leader was
/// sending by 0.3-0.8 s after the slow start, the loop began receiving only at 10.3-10.7 s, when
/// the fsync begun at 0.3-0.7 s ended, and `/status` stalled 10.0 s against the normal node's
/// 0.04 s. Without it, it passed 7 runs out of 7 at the first attempt, the snapshot beginning
/// 0.0-0.3 s into the fsync and the slow node's slowest answer at most 0.07 s (the normal node's at
/// most 0.09 s). With answers measured as gaps (2026-12-02), the planted begin failed again on
/// both counts (the loop began receiving at 10.71 s, when the fsync begun at 0.71 s ended, and
/// `/status` went 10.0 s without an answer), and without it the test passed with a longest gap
/// of 0.05 s on both nodes. What it exercises is the begin: a slow leader opening a snapshot to
/// send, and an abort, are not covered here.
@Suite(.serialized) struct SlowFsyncTests {
  /// Long: the snapshot arrives within a second or two of the fsync beginning, so even a heavily
  /// loaded machine (a fresh-clone CI run once saw a 4 s answer) leaves it inside the fsync.
  static let fsyncDelayMillis = 10_000
  static let attempts = 3

  @Test func theNodeLoopKeepsAnsweringWhileFsyncsAreSlow() async throws {
    for attempt in 1...Self.attempts {
      if try await Self.runScenario(attempt: attempt) { return }
    }
    Issue.record("the scenario did not happen in \(Self.attempts) attempts (see the lines printed above)")
  }

  /// One attempt in a new cluster; false when the scenario did not happen (the caller tries again).
  static func runScenario(attempt: Int) async throws -> Bool {
    let harness = try ClusterHarness(extraArguments: ["-snapshot-threshold", "200", "-log-retain", "5"])
    defer { harness.stopAll() }
    let names = ["node01", "node02", "node03"]
    let leader = try await harness.startCluster(names)
    let slow = try #require(names.first { $0 != leader })
    let others = names.filter { $0 != slow }
    let client = RaftDBClient(endpoints: others.map { harness.spec($0).http }, group: ClusterHarness.group)
    defer { Task { await client.close() } }

    // Behind a compacted log: the leaders' logs now start after the slow node's last entry.
    harness.kill(slow)
    for i in 0..<300 { try await client.put(["s\(i % 50)": "v\(i)"]) }
    // Behind a newer term: restarting the leader makes the two elect one in a new term.
    let termBefore = await Self.term(of: leader, harness)
    harness.kill(leader)
    try harness.start(leader)
    let newLeader = try #require(await harness.waitForLeader(among: others), "no leader after the restart")
    let termAfter = await Self.term(of: newLeader, harness)
    try #require(
      termAfter > termBefore, "the restart did not start a new term (\(termBefore) -> \(termAfter))")
    let normal = try #require(others.first { $0 != newLeader })
    let sentBefore = others.map { Self.snapshotsSent(to: slow, inLogOf: harness.log($0)) }

    try harness.start(slow, environment: ["RAFTDB_TEST_FSYNC_DELAY_MS": "\(Self.fsyncDelayMillis)"])
    let clock = ContinuousClock()
    let started = clock.now
    // Writes continue, so that the slow node's loop also takes appends while its writer is busy;
    // slowly (one a second), so that the leader takes no newer snapshot (every 200 entries) for the
    // node to fetch before the first is installed (each install takes several slow fsyncs).
    let writer = Task {
      var i = 0
      while !Task.isCancelled {
        _ = try? await client.put(["w\(i % 20)": "v\(i)"])
        i += 1
        try? await Task.sleep(for: .seconds(1))
      }
    }
    defer { writer.cancel() }
    let slowPolls = StatusPolls()
    let normalPolls = StatusPolls()
    let pollers = [
      Task { await slowPolls.run(harness, slow) }, Task { await normalPolls.run(harness, normal) },
    ]

    // Watch the logs until the verdict can be read, then a second more. Each round reads the
    // others' logs before the slow node's, so what it finds there was logged before what it
    // finds in the slow node's log in a later round.
    var watch = LogWatch()
    var closesAt: ContinuousClock.Instant?
    while closesAt.map({ clock.now < $0 }) ?? (clock.now < started + .seconds(90)) {
      let sent = zip(others, sentBefore).contains { name, before in
        Self.snapshotsSent(to: slow, inLogOf: harness.log(name)) > before
      }
      let afterOthers = clock.now
      if sent && watch.sentBy == nil { watch.sentBy = afterOthers }
      let beforeSlow = clock.now
      watch.record(Self.events(inLogOf: harness.log(slow)), readStartedAt: beforeSlow, readEndedAt: clock.now)
      if closesAt == nil && watch.canDecide { closesAt = clock.now + .seconds(1) }
      try await Task.sleep(for: .milliseconds(50))
    }
    slowPolls.stop()
    normalPolls.stop()
    for poller in pollers { await poller.value }
    writer.cancel()

    let verdict = watch.verdict
    let slowResult = slowPolls.result
    let normalResult = normalPolls.result
    let margin = Duration.milliseconds(Self.fsyncDelayMillis / 2)
    let duringFsync = watch.fsyncAfterSnapshot.map { window in
      slowResult.answeredAt.filter { $0 > window.from && $0 < window.to }.count
    }
    let firstAnswer = slowResult.answeredAt.first.map { secondsText($0 - started) } ?? "never"
    print(
      "SlowFsyncTests attempt \(attempt): \(verdict); \(watch.timings(since: started)); slow node \(slow): "
        + "\(slowResult.answeredAt.count) answers, the first after \(firstAnswer), longest gap \(secondsText(slowResult.longestGap)), "
        + "\(duringFsync.map { "\($0)" } ?? "-") during the fsync after the snapshot began; normal node \(normal): "
        + "\(normalResult.answeredAt.count) answers, longest gap \(secondsText(normalResult.longestGap))")
    let log = harness.log(slow)
    // Whatever the verdict, a stall is a failure: nothing else on the loop may wait either.
    #expect(
      slowResult.longestGap < normalResult.longestGap + margin,
      "the slow node's loop went \(slowResult.longestGap) without answering (the normal node's longest: \(normalResult.longestGap)) while fsyncs took \(Self.fsyncDelayMillis) ms"
    )
    switch verdict {
    case .undecided:
      Issue.record("the slow node received no snapshot within 90 s:\n\(log.suffix(4000))")
      return true
    case .missed(let why):
      print("SlowFsyncTests attempt \(attempt): the scenario did not happen (\(why)); trying again")
      return false
    case .waited:
      Issue.record(
        "the slow node's loop began receiving the snapshot only after the slow fsync in flight had ended, though the leader had sent it well before: it waited for the disk"
      )
    case .didNotWait:
      if let window = watch.fsyncAfterSnapshot, slowResult.answeredAt.first.map({ $0 >= window.to }) ?? true {
        // Its HTTP API did not answer before the window closed: nothing was measured. (A fresh-clone
        // CI run saw this once, on a heavily loaded machine.) A loop or a start-up that waits for
        // the disk does this on every attempt, so the retry cannot hide one.
        print(
          "SlowFsyncTests attempt \(attempt): the slow node did not answer /status before the fsync after the snapshot ended; trying again. Its log since the slow start:\n"
            + Self.linesSinceSlowStart(log))
        return false
      }
    }
    #expect(log.contains("test fault: every fsync from now on first sleeps"))
    #expect(
      slowResult.answeredAt.count >= 10, "the slow node answered /status \(slowResult.answeredAt.count) times"
    )
    if verdict == .didNotWait {
      #expect(
        (duringFsync ?? 0) >= 1,
        "the slow node did not answer /status during the fsync after the snapshot began")
    }
    let caughtUp = await harness.eventually(timeout: .seconds(240)) {
      let value = try? await harness.request(slow, .GET, "/key/s49?level=stale")
      return value?.status == .ok
    }
    #expect(caughtUp, "the slow node installed the snapshot and caught up")
    return true
  }

  /// The verdict on made-up logs, one round of the watch a second apart (a process-level run takes
  /// one path of it; this one takes them all, the retries included).
  @Test func theVerdictIsReadOffTheOrderOfTheLog() {
    let start = ContinuousClock.now
    func watch(_ rounds: [[Event]], sentInRound: Int?) -> LogWatch {
      var watch = LogWatch()
      var logged: [Event] = []
      for (k, round) in rounds.enumerated() {
        let at = start + .seconds(k)
        if k == sentInRound { watch.sentBy = at }
        logged += round
        watch.record(logged, readStartedAt: at, readEndedAt: at + .milliseconds(1))
      }
      return watch
    }
    func missed(_ verdict: Verdict) -> Bool {
      if case .missed = verdict { return true }
      return false
    }
    let inFlight = watch([[.fsyncBegan], [.receivingSnapshot]], sentInRound: 0)
    #expect(
      inFlight.verdict == .didNotWait && !inFlight.canDecide, "the window stays open until that fsync ends")
    let passed = watch([[.fsyncBegan], [.receivingSnapshot], [], [.fsyncEnded]], sentInRound: 0)
    #expect(passed.verdict == .didNotWait && passed.canDecide)
    let waited = watch([[.fsyncBegan], [], [], [.fsyncEnded, .receivingSnapshot]], sentInRound: 0)
    #expect(waited.verdict == .waited && waited.canDecide)
    // Two slow fsyncs in one batch, the loop waiting for both.
    let waitedLonger = watch(
      [[.fsyncBegan], [], [.fsyncEnded, .fsyncBegan], [], [.fsyncEnded], [.receivingSnapshot]], sentInRound: 0
    )
    #expect(waitedLonger.verdict == .waited)
    #expect(missed(watch([[.receivingSnapshot], [.fsyncBegan]], sentInRound: 0).verdict))
    #expect(missed(watch([[.fsyncBegan], [], [.fsyncEnded], [.receivingSnapshot]], sentInRound: 2).verdict))
    #expect(missed(watch([[.fsyncBegan], [], [.fsyncEnded, .receivingSnapshot]], sentInRound: nil).verdict))
    let nothing = watch([[.fsyncBegan], [], [.fsyncEnded]], sentInRound: 0)
    #expect(nothing.verdict == .undecided && !nothing.canDecide)
  }

  /// The slow node's log from its start with slow fsyncs (at most 60 lines), for a report.
  static func linesSinceSlowStart(_ text: String) -> String {
    let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
    let start = lines.lastIndex { $0.contains("test fault: every fsync from now on first sleeps") } ?? 0
    return lines[start...].prefix(60).joined(separator: "\n")
  }

  static func term(of node: String, _ harness: ClusterHarness) async -> UInt64 {
    (await harness.status(node)?["term"] as? NSNumber)?.uint64Value ?? 0
  }

  /// How many times a node's log says it began sending a snapshot to `peer`.
  static func snapshotsSent(to peer: String, inLogOf text: String) -> Int {
    text.split(separator: "\n").count(where: { line in
      line.contains("sending snapshot") && line.hasSuffix(" to \(peer)")
    })
  }

  enum Event: Equatable {
    case fsyncBegan
    case fsyncEnded
    case receivingSnapshot
  }

  /// The slow node's slow fsyncs and received snapshots, in the order it logged them, since its
  /// start with slow fsyncs.
  static func events(inLogOf text: String) -> [Event] {
    guard let start = text.range(of: "test fault: every fsync from now on first sleeps", options: .backwards)
    else { return [] }
    return text[start.upperBound...].split(separator: "\n").compactMap { line in
      if line.contains("test fault: slow fsync began") { return .fsyncBegan }
      if line.contains("test fault: slow fsync ended") { return .fsyncEnded }
      if line.contains("receiving snapshot") { return .receivingSnapshot }
      return nil
    }
  }

  enum Verdict: Equatable, CustomStringConvertible {
    case undecided
    case didNotWait
    case waited
    case missed(String)

    var description: String {
      switch self {
      case .undecided: "no snapshot received"
      case .didNotWait: "the loop began receiving the snapshot while a slow fsync was in flight"
      case .waited: "the loop began receiving the snapshot only after the slow fsync in flight had ended"
      case .missed(let why): "scenario missed: \(why)"
      }
    }
  }

  /// What the watch has seen: the slow node's events, each with bounds on when it was logged, and
  /// by when the leader had logged that it was sending the snapshot.
  struct LogWatch {
    var events: [Event] = []
    /// Per event: logged after this (the start of the read before the one that first saw it).
    var loggedAfter: [ContinuousClock.Instant] = []
    /// Per event: logged before this (the end of the read that first saw it).
    var loggedBefore: [ContinuousClock.Instant] = []
    var sentBy: ContinuousClock.Instant?
    private var previousReadStart: ContinuousClock.Instant?

    mutating func record(
      _ current: [Event], readStartedAt start: ContinuousClock.Instant,
      readEndedAt end: ContinuousClock.Instant
    ) {
      for event in current.dropFirst(events.count) {
        events.append(event)
        loggedAfter.append(previousReadStart ?? start)
        loggedBefore.append(end)
      }
      previousReadStart = start
    }

    var receiving: Int? { events.firstIndex(of: .receivingSnapshot) }
    /// The last fsync marker before the snapshot began.
    var markerBeforeSnapshot: Int? {
      receiving.flatMap { r in events[..<r].lastIndex { $0 != .receivingSnapshot } }
    }
    /// The end of the fsync that was in flight when the snapshot began.
    var endAfterSnapshot: Int? {
      receiving.flatMap { r in events[r...].firstIndex(of: .fsyncEnded) }
    }

    /// Whether the window can close: the snapshot began, and the fsync it began in (if any) ended.
    var canDecide: Bool {
      guard receiving != nil else { return false }
      guard let marker = markerBeforeSnapshot, events[marker] == .fsyncBegan else { return true }
      return endAfterSnapshot != nil
    }

    var verdict: Verdict {
      guard receiving != nil else { return .undecided }
      guard let marker = markerBeforeSnapshot else {
        return .missed("the snapshot arrived before any slow fsync began")
      }
      if events[marker] == .fsyncBegan { return .didNotWait }
      // The fsync ended before the loop began receiving: the loop waited if the leader had sent the
      // snapshot well before that fsync ended.
      if let sentBy, sentBy + .seconds(1) <= loggedAfter[marker] { return .waited }
      return .missed("the leader sent the snapshot only when the slow fsync was ending or had ended")
    }

    /// From the snapshot's beginning to the end of the fsync it began in.
    var fsyncAfterSnapshot: (from: ContinuousClock.Instant, to: ContinuousClock.Instant)? {
      guard verdict == .didNotWait, let r = receiving, let end = endAfterSnapshot else { return nil }
      return (loggedBefore[r], loggedAfter[end])
    }

    func timings(since start: ContinuousClock.Instant) -> String {
      func at(_ k: Int?) -> String { k.map { secondsText(loggedAfter[$0] - start) } ?? "-" }
      let began = receiving.flatMap { r in events[..<r].lastIndex(of: .fsyncBegan) }
      let ended = markerBeforeSnapshot.flatMap { events[$0] == .fsyncEnded ? $0 : nil } ?? endAfterSnapshot
      let sent = sentBy.map { secondsText($0 - start) } ?? "-"
      return
        "since the slow start: a slow fsync began after \(at(began)), the leader was sending by \(sent), the loop began receiving after \(at(receiving)), that fsync ended after \(at(ended))"
    }
  }
}

/// `/status` polled back to back on one node until stopped: when each answer arrived, and the
/// longest time without one from the first answer until the polls stopped. Each request gives up
/// after two seconds, so that one lost request does not hide the answers after it; a stalled loop
/// shows as a gap however its requests end.
final class StatusPolls: Sendable {
  struct Polls {
    var answeredAt: [ContinuousClock.Instant] = []
    var longestGap = Duration.zero
  }

  private let state = Mutex(Polls())
  private let stopped = Atomic(false)

  func stop() { stopped.store(true, ordering: .relaxed) }
  var result: Polls { state.withLock { $0 } }

  func run(_ harness: ClusterHarness, _ name: String) async {
    let clock = ContinuousClock()
    while !stopped.load(ordering: .relaxed) {
      let response = try? await harness.request(name, .GET, "/status", timeout: .seconds(2))
      let end = clock.now
      if response?.status == .ok {
        state.withLock {
          if let last = $0.answeredAt.last { $0.longestGap = max($0.longestGap, end - last) }
          $0.answeredAt.append(end)
        }
      } else {
        try? await Task.sleep(for: .milliseconds(20))  // Still starting (or failed: try again).
      }
    }
    let end = clock.now
    state.withLock {
      if let last = $0.answeredAt.last { $0.longestGap = max($0.longestGap, end - last) }
    }
  }
}

/// A duration as seconds with two decimals, for the test's report lines.
func secondsText(_ duration: Duration) -> String {
  let (whole, fraction) = duration.components
  return String(format: "%.2f s", Double(whole) + Double(fraction) / 1e18)
}
