import Foundation
import Testing

/// `GET /watch/...` on a real three-node cluster, read with curl as a user would: events in order
/// with their revisions, replay from the past, a resume on another member after a kill -9 that
/// misses and repeats nothing, compaction, filters, progress, and a stalled reader that is cancelled
/// while the others and the writes go on.
@Suite(.serialized) struct WatchHTTPTests {
  @Test func watchesFollowTheCommittedHistoryAcrossAKill() async throws {
    let harness = try ClusterHarness(extraArguments: ["-watch-progress-notify-interval", "300"])
    let names = ["node01", "node02", "node03"]
    let leader = try await harness.startCluster(names)
    try #require(await MultiVersionHTTPTests.waitForVersion3(harness, names), "\(harness.log(leader))")
    let followers = names.filter { $0 != leader }
    let client = harness.client()

    // A watch from now on a follower, with previous values, and one with progress notifications.
    let live = try CurlWatch(harness, followers[0], "/watch/app/?prefix=true&prev_kv=true", "live")
    let quiet = try CurlWatch(harness, followers[1], "/watch/nothing?progress_notify=true", "quiet")
    #expect(await harness.eventually { live.messages().first?.event == "created" }, "\(live.output())")
    for i in 0..<20 { _ = try await client.put(["app/\(i % 5)": "v\(i)"]) }
    _ = try await client.put(["other": "not watched"])
    _ = try await client.delete("app/0")
    let delivered = await harness.eventually { live.events().count == 21 }
    #expect(delivered, "\(live.output())")
    let events = live.events()
    #expect(events.map(\.revision) == Array(1...20) + [22], "in revision order, the unwatched key left out")
    #expect(events.prefix(20).map(\.key) == (0..<20).map { "app/\($0 % 5)" })
    #expect(events.last?.type == "DELETE" && events.last?.key == "app/0")
    #expect(events[5].previousValue == "v0", "prev_kv carries the value before")
    #expect(
      await harness.eventually { quiet.messages().contains { $0.event == "progress" } }, "\(quiet.output())")
    #expect(quiet.messages().allSatisfy { $0.event != "events" })
    quiet.stop()

    // The past, replayed on another member: filters apply.
    let past = try CurlWatch(harness, followers[1], "/watch/app/?prefix=true&rev=3&filter=nodelete", "past")
    #expect(await harness.eventually { past.events().count == 18 }, "\(past.output())")
    #expect(past.events().map(\.revision) == Array(3...20))
    past.stop()

    // Kill the member serving a watch while writes go on; resume on another member from the last
    // event id. Together the two streams hold every change exactly once.
    let resumed = try CurlWatch(harness, followers[0], "/watch/r/?prefix=true&rev=1", "before-kill")
    var written: [Int] = []
    for i in 0..<120 {
      if i == 40 { harness.kill(followers[0]) }
      written.append(Int(try await client.put(["r/\(i % 7)": "\(i)"])))
    }
    let lastSeen = resumed.messages().last { $0.id != nil }?.id ?? 0
    resumed.stop()
    let after = try CurlWatch(
      harness, followers[1], "/watch/r/?prefix=true", "after-kill", lastEventID: lastSeen)
    #expect(
      await harness.eventually { after.events().last?.revision == Int64(written.last!) }, "\(after.output())")
    let combined = resumed.events() + after.events()
    #expect(combined.map(\.revision) == written.map(Int64.init), "no gap and no repeat across the resume")
    #expect(combined.map(\.value) == (0..<120).map { "\($0)" })
    after.stop()
    // The killed member comes back with its history and serves the same stream from the start.
    try harness.start(followers[0])
    #expect(await harness.eventually { await harness.status(followers[0]) != nil })
    let again = try CurlWatch(harness, followers[0], "/watch/r/?prefix=true&rev=1", "restarted")
    #expect(await harness.eventually { again.events().count == 120 }, "\(again.output())")
    #expect(again.events().map(\.revision) == written.map(Int64.init))
    again.stop()

    // Compaction: a watch from below it is created, then cancelled with the compacted revision.
    let compact = try await harness.request(leader, .POST, "/compact", body: #"{"revision": 30}"#)
    #expect(compact.status == .ok, "\(compact.bodyText)")
    let cut = try CurlWatch(harness, leader, "/watch/r/?prefix=true&rev=10", "compacted")
    #expect(await harness.eventually { !cut.isRunning }, "the stream ends after the cancel")
    let cancel = cut.messages().last
    #expect(cancel?.event == "canceled", "\(cut.output())")
    #expect(cancel?.json["compact_revision"] as? Int == 30)
    live.stop()

    // Bad requests are refused before any stream starts.
    for path in ["/watch/a?prefx=true", "/watch/a?filter=nothing", "/watch/a?rev=-1"] {
      let refused = try await harness.request(leader, .GET, path)
      #expect(refused.status == .badRequest, "\(path): \(refused.bodyText)")
    }
    let wrongMethod = try await harness.request(leader, .POST, "/watch/a")
    #expect(wrongMethod.status == .methodNotAllowed)
    #expect(await harness.metric("raftdb_watchers", leader) == 0, "every watch ended with its connection")
  }

  /// A reader that stops reading is cancelled once its events exceed the member's bound, and says
  /// so; a reader beside it gets everything, and writes are not held up.
  @Test func aStalledReaderIsCancelledAndHoldsUpNoOne() async throws {
    let harness = try ClusterHarness(extraArguments: ["-max-watch-buffer-bytes", "65536"])
    let leader = try await harness.startCluster(["node01"])
    try #require(await MultiVersionHTTPTests.waitForVersion3(harness, ["node01"]))
    let client = harness.client()
    let reader = try CurlWatch(harness, leader, "/watch/big/?prefix=true", "reader")
    let stalled = try StalledReader(port: harness.spec(leader).httpPort, path: "/watch/big/?prefix=true")
    defer { stalled.close() }
    #expect(await harness.eventually { await harness.metric("raftdb_watchers", leader) == 2 })
    let value = String(repeating: "x", count: 20_000)
    for i in 0..<400 { _ = try await client.put(["big/\(i)": value]) }
    #expect(await harness.eventually { reader.events().count == 400 }, "the reading watcher is not held up")
    #expect(await harness.eventually { await harness.metric("raftdb_watch_cancelled_total", leader) == 1 })
    #expect(harness.log(leader).contains("watcher is too slow"), "\(harness.log(leader).suffix(2000))")
    #expect(await harness.eventually { await harness.metric("raftdb_watchers", leader) == 1 })
    reader.stop()
  }
}

/// A `curl -N` reading one watch's event stream into a file.
final class CurlWatch: @unchecked Sendable {
  // Unchecked: the process is started in init and only signalled afterwards; the parse state is
  // behind `lock`.
  struct Message {
    var event: String
    var id: Int64?
    var json: [String: Any]
  }

  struct Event: Equatable {
    var type: String
    var key: String
    var value: String
    var revision: Int64
    var previousValue: String?
  }

  private let process = Process()
  private let file: URL
  private let lock = NSLock()
  private var offset: UInt64 = 0
  private var unparsed = Data()
  private var parsed: [Message] = []

  init(_ harness: ClusterHarness, _ node: String, _ path: String, _ label: String, lastEventID: Int64? = nil)
    throws
  {
    file = harness.root.appendingPathComponent("watch-\(label).sse")
    FileManager.default.createFile(atPath: file.path, contents: nil)
    process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
    var arguments = ["-sN", "--max-time", "120"]
    if let lastEventID { arguments += ["-H", "Last-Event-ID: \(lastEventID)"] }
    process.arguments = arguments + ["http://\(harness.spec(node).http)\(path)"]
    process.standardOutput = try FileHandle(forWritingTo: file)
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

  func output() -> String { (try? String(contentsOf: file, encoding: .utf8)) ?? "" }

  /// The complete SSE messages so far (parsed once each: the file is read from where the last call
  /// stopped).
  func messages() -> [Message] {
    lock.withLock {
      guard let handle = try? FileHandle(forReadingFrom: file) else { return parsed }
      defer { try? handle.close() }
      try? handle.seek(toOffset: offset)
      let data = handle.readDataToEndOfFile()
      offset += UInt64(data.count)
      unparsed += data
      let separator = Data("\n\n".utf8)
      while let range = unparsed.range(of: separator) {
        let block = String(decoding: unparsed[unparsed.startIndex..<range.lowerBound], as: UTF8.self)
        unparsed = Data(unparsed[range.upperBound...])
        guard !block.isEmpty, !block.hasPrefix(":") else { continue }
        var message = Message(event: "", id: nil, json: [:])
        for line in block.split(separator: "\n") {
          if line.hasPrefix("event: ") { message.event = String(line.dropFirst(7)) }
          if line.hasPrefix("id: ") { message.id = Int64(line.dropFirst(4)) }
          if line.hasPrefix("data: ") {
            message.json =
              (try? JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8))) as? [String: Any] ?? [:]
          }
        }
        parsed.append(message)
      }
      return parsed
    }
  }

  func events() -> [Event] {
    messages().filter { $0.event == "events" }.flatMap { message in
      (message.json["events"] as? [[String: Any]] ?? []).map { event in
        let kv = event["kv"] as? [String: Any] ?? [:]
        return Event(
          type: event["type"] as? String ?? "", key: kv["key"] as? String ?? "",
          value: kv["value"] as? String ?? "",
          revision: Int64(kv["mod_revision"] as? Int ?? -1),
          previousValue: (event["prev_kv"] as? [String: Any])?["value"] as? String)
      }
    }
  }
}

/// A client that asks for a watch and never reads the answer, with a small receive buffer.
final class StalledReader: @unchecked Sendable {
  // Unchecked: one socket, written once in init and closed once.
  private let socket: Int32

  init(port: Int, path: String) throws {
    socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var small: Int32 = 4096
    setsockopt(socket, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
    var address = loopbackAddress(port)
    let connected = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    guard connected == 0 else { throw HarnessError("cannot connect to port \(port)") }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8)
    _ = request.withUnsafeBytes { send(socket, $0.baseAddress, $0.count, 0) }
  }

  func close() { _ = Foundation.close(socket) }
}
