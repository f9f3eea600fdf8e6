import Foundation
import RaftDBClient
import Testing

/// `raftctl watch` on a real three-node cluster: etcdctl's output, a kill -9 of the member it reads
/// from while writes go on (every change printed exactly once, in order), a replay of the history
/// as JSON, and its usage errors.
@Suite(.serialized) struct RaftctlWatchTests {
  @Test func watchPrintsChangesAndResumesOnAnotherMemberAfterAKill() async throws {
    let harness = try ClusterHarness()
    let names = ["node01", "node02", "node03"]
    let leader = try await harness.startCluster(names)
    try #require(await MultiVersionHTTPTests.waitForVersion3(harness, names), "\(harness.log(leader))")
    let followers = names.filter { $0 != leader }
    let client = harness.client()
    let endpoints = followers.map { "http://\(harness.spec($0).http)" }.joined(separator: ",")
    let watch = try BackgroundRaftctl(
      harness, "live", ["watch", "app/", "--prefix", "--endpoints", endpoints, "--timeout", "60"])
    defer { watch.stop() }
    #expect(
      await harness.eventually { await harness.metric("raftdb_watchers", followers[0]) == 1 },
      "\(watch.stderr())")

    // Puts and a delete made through the leader, printed as etcdctl prints them; another key not.
    var expected: [String] = []
    for i in 0..<5 {
      _ = try await client.put(["app/k\(i)": "v\(i)"])
      expected += ["PUT", "app/k\(i)", "v\(i)"]
    }
    _ = try await client.put(["other": "not watched"])
    _ = try await client.delete("app/k0")
    expected += ["DELETE", "app/k0", ""]
    #expect(await harness.eventually { watch.lines() == expected }, "\(watch.stdout())\(watch.stderr())")

    // Kill -9 the member it reads from while the puts go on: it resumes on the other follower.
    for i in 0..<90 {
      if i == 30 { harness.kill(followers[0]) }
      _ = try await client.put(["app/r\(i % 7)": "\(i)"])
      expected += ["PUT", "app/r\(i % 7)", "\(i)"]
    }
    let complete = await harness.eventually(timeout: .seconds(40)) { watch.lines().count >= expected.count }
    #expect(complete, "\(watch.stdout().suffix(2000))\(watch.stderr())")
    try await Task.sleep(for: .milliseconds(500))
    #expect(watch.lines() == expected, "every change exactly once, in order: \(watch.stderr())")
    #expect(
      watch.stderr().contains("retrying on \(harness.spec(followers[1]).http)"),
      "it says where it retries: \(watch.stderr())")
    #expect(watch.isRunning)
    watch.stop()

    // The history from revision 1 as JSON, one line per message of the stream (a replay may put
    // many revisions in one), on the surviving follower; with --prev-kv the value before a change
    // comes first, as etcdctl prints it.
    let replay = try BackgroundRaftctl(
      harness, "replay",
      [
        "watch", "app/", "--prefix", "--rev", "1", "-w", "json", "--endpoints",
        "http://\(harness.spec(followers[1]).http)",
      ])
    defer { replay.stop() }
    func replayed() -> [[String: Any]] {
      replay.lines().map { MultiVersionHTTPTests.json($0) }.flatMap { $0["events"] as? [[String: Any]] ?? [] }
    }
    #expect(await harness.eventually { replayed().count >= 96 }, "\(replay.stdout())\(replay.stderr())")
    let events = replayed()
    #expect(events.count == 96, "5 puts, a delete and 90 puts: \(replay.stdout())")
    let revisions = events.map { ($0["kv"] as? [String: Any])?["mod_revision"] as? Int ?? -1 }
    #expect(revisions == revisions.sorted() && Set(revisions).count == revisions.count, "\(revisions)")
    let kv = events.first?["kv"] as? [String: Any]
    #expect(
      events.first?["type"] as? String == "PUT" && kv?["key"] as? String == "app/k0"
        && kv?["value"] as? String == "v0")
    #expect(events[5]["type"] as? String == "DELETE")
    replay.stop()

    let previous = try BackgroundRaftctl(
      harness, "prev",
      [
        "watch", "app/r0", "--rev", "1", "--prev-kv", "--filter", "nodelete", "--endpoints",
        "http://\(harness.spec(followers[1]).http)",
      ])
    defer { previous.stop() }
    #expect(
      await harness.eventually { previous.lines().count >= 8 }, "\(previous.stdout())\(previous.stderr())")
    #expect(Array(previous.lines().prefix(8)) == ["PUT", "app/r0", "0", "PUT", "app/r0", "0", "app/r0", "7"])
    previous.stop()
  }

  /// A raftctl that stops reading (SIGSTOP) is cancelled by the member as too slow; once it runs
  /// again it resumes from where the member stopped on its own, and prints every change once.
  @Test func watchResumesAfterTheMemberCancelsItAsTooSlow() async throws {
    let harness = try ClusterHarness(extraArguments: ["-max-watch-buffer-bytes", "65536"])
    let leader = try await harness.startCluster(["node01"])
    try #require(await MultiVersionHTTPTests.waitForVersion3(harness, ["node01"]))
    let client = harness.client()
    let watch = try BackgroundRaftctl(
      harness, "slow", ["watch", "big/", "--prefix", "--endpoints", harness.spec(leader).http])
    defer { watch.stop() }
    #expect(await harness.eventually { await harness.metric("raftdb_watchers", leader) == 1 })
    watch.signal(SIGSTOP)
    let value = String(repeating: "x", count: 30_000)
    var expected: [String] = []
    for i in 0..<500 {
      _ = try await client.put(["big/\(i)": "\(i)\(value)"])
      expected += ["PUT", "big/\(i)", "\(i)\(value)"]
    }
    #expect(await harness.eventually { await harness.metric("raftdb_watch_cancelled_total", leader) == 1 })
    watch.signal(SIGCONT)
    #expect(
      await harness.eventually(timeout: .seconds(40)) { watch.lines().count >= expected.count },
      "\(watch.stderr())")
    try await Task.sleep(for: .milliseconds(300))
    let lines = watch.lines()
    #expect(
      lines.count == expected.count && lines == expected, "every change once, in order: \(watch.stderr())")
    #expect(watch.stderr().contains("resuming from revision"), "\(watch.stderr())")
    #expect(watch.isRunning)
  }

  @Test func watchRefusesBadFlagsAndSaysWhenNothingAnswers() throws {
    for arguments in [
      ["watch", "a", "--filter", "nothing"], ["watch", "a", "--rev", "0"], ["watch"],
      ["watch", "a", "--prefx"],
      ["watch", "a", "-w", "yaml"],
    ] {
      let run = try ClusterHarness.runRaftctl(arguments + ["--endpoints", "127.0.0.1:1"])
      #expect(run.status == 64, "\(arguments): \(run.status) \(run.stderr)")
    }
    let unavailable = try ClusterHarness.runRaftctl([
      "watch", "a", "--endpoints", "127.0.0.1:1", "--timeout", "1",
    ])
    #expect(unavailable.status == 69, "\(unavailable.stderr)")
    #expect(unavailable.stderr.contains("connection refused"), "\(unavailable.stderr)")
    let help = try ClusterHarness.runRaftctl(["watch", "--help"])
    #expect(help.status == 0 && help.stdout.contains("--prev-kv"), "\(help.stdout)")
  }
}

/// A `raftctl` (or another client, `executable`) that runs in the background with its output in
/// files, read while it runs.
final class BackgroundRaftctl: @unchecked Sendable {
  // Unchecked: the process is started in init and only signalled and read afterwards.
  private let process = Process()
  private let out: URL
  private let err: URL

  init(_ harness: ClusterHarness, _ label: String, _ arguments: [String], executable: URL? = nil) throws {
    out = harness.root.appendingPathComponent("raftctl-\(label).out")
    err = harness.root.appendingPathComponent("raftctl-\(label).err")
    FileManager.default.createFile(atPath: out.path, contents: nil)
    FileManager.default.createFile(atPath: err.path, contents: nil)
    process.executableURL =
      executable ?? ProcessInfo.processInfo.environment["RAFTDB_TEST_RAFTCTL"].map {
        URL(fileURLWithPath: $0)
      }
      ?? ClusterHarness.executable.deletingLastPathComponent().appendingPathComponent("raftctl")
    process.arguments = arguments
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    try process.run()
  }

  deinit { stop() }

  var isRunning: Bool { process.isRunning }

  func stop() {
    guard process.isRunning else { return }
    // SIGKILL: a child of the test runner may inherit a signal mask that blocks SIGTERM.
    kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
  }

  func signal(_ number: Int32) { kill(process.processIdentifier, number) }

  /// Waits up to `timeout` for the process to exit: its status, or nil if it still runs.
  func exitStatus(within timeout: Duration) async -> Int32? {
    let deadline = ContinuousClock.now + timeout
    while process.isRunning && ContinuousClock.now < deadline {
      try? await Task.sleep(for: .milliseconds(50))
    }
    return process.isRunning ? nil : process.terminationStatus
  }

  func stdout() -> String { (try? String(contentsOf: out, encoding: .utf8)) ?? "" }
  func stderr() -> String { (try? String(contentsOf: err, encoding: .utf8)) ?? "" }

  /// The complete lines printed so far.
  func lines() -> [String] {
    var lines = stdout().split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    lines.removeLast()  // After the last newline: empty, or a line still being written.
    return lines
  }
}

/// The client's incremental Server-Sent Events parser: messages whatever the parts' boundaries,
/// and a bound on what one unfinished message may hold.
@Suite struct SSEParserTests {
  @Test func parsesMessagesSplitAnywhere() throws {
    let stream = Array(
      "id: 5\nevent: events\ndata: {\"a\":1}\n\n: heartbeat\n\nevent: progress\r\nid: 7\r\ndata: x\r\ndata: y\r\n\r\ndata:z\n\n"
        .utf8)
    let expected = [
      SSEMessage(event: "events", data: #"{"a":1}"#, id: "5"),
      SSEMessage(event: "progress", data: "x\ny", id: "7"),
      SSEMessage(event: "message", data: "z", id: nil),
    ]
    for size in 1...stream.count {
      var parser = SSEParser()
      var messages: [SSEMessage] = []
      var start = 0
      while start < stream.count {
        messages += try parser.feed(stream[start..<min(start + size, stream.count)])
        start += size
      }
      #expect(messages == expected, "parts of \(size) bytes")
    }
  }

  @Test func refusesAMessageBeyondTheBound() throws {
    var parser = SSEParser(maxMessageBytes: 100)
    #expect(try parser.feed(Array("data: \(String(repeating: "x", count: 90))\n\n".utf8)).count == 1)
    #expect(throws: SSEError.self) { try parser.feed(Array(repeating: UInt8(ascii: "x"), count: 101)) }
    var lines = SSEParser(maxMessageBytes: 100)
    #expect(throws: SSEError.self) {
      for _ in 0..<20 { _ = try lines.feed(Array("data: xxxxxxxx\n".utf8)) }
    }
  }
}
