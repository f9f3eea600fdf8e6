import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import RaftDBServer

/// The head and body deadlines, eviction from a full connection table, and the budget of buffered
/// request bodies, on `EmbeddedChannel`s that share one `EmbeddedEventLoop`, whose clock the tests
/// advance by hand: no test waits for real time.
@Suite struct HTTPLimitsTests {
  typealias ScriptedResponder = HTTPConnectionHandlerTests.ScriptedResponder

  let loop = EmbeddedEventLoop()
  let metrics = NodeMetrics()
  let refusals: HTTPRefusals
  let budget: RequestBodyBudget
  let limits = HTTPLimits(
    maxBodyBytes: 16, headerTimeout: .seconds(10), bodyTimeout: .seconds(30), idleTimeout: .seconds(60))

  init() {
    refusals = HTTPRefusals(metrics: metrics, logger: Logger(label: "test"))
    budget = RequestBodyBudget(limitBytes: 32)
  }

  /// One client connection with its own scripted API.
  struct Connection {
    let channel: EmbeddedChannel
    let responder: ScriptedResponder

    func send(_ text: String) throws { try channel.writeInbound(ByteBuffer(string: text)) }

    func output() throws -> String {
      var text = ""
      while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
        text += buffer.readString(length: buffer.readableBytes) ?? ""
      }
      return text
    }
  }

  /// A connection on the shared loop, registered in `registry` when one is given (as the server
  /// does before it builds the pipeline); nil when the registry refuses it.
  func connect(_ registry: ConnectionRegistry? = nil) throws -> Connection? {
    let channel = EmbeddedChannel(loop: loop)
    let activity = ConnectionActivity()
    if let registry, !registry.admit(channel, activity: activity) { return nil }
    let responder = ScriptedResponder()
    try channel.pipeline.syncOperations.addRaftDBHTTPHandlers(
      api: responder, limits: limits, budget: budget, activity: activity, refusals: refusals)
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8091)).wait()
    return Connection(channel: channel, responder: responder)
  }

  func advance(seconds: Int64) { loop.advanceTime(by: .seconds(seconds)) }

  // MARK: Item 9: slow heads and bodies

  @Test func aHeadTrickledByteByByteGets408AtTheHeaderDeadlineThoughEveryByteIsOnTime() throws {
    let connection = try #require(try connect())
    // One byte every 2 s: the idle timeout (60 s), restarted by each byte, would never fire.
    for byte in "GET /key/a" {
      try connection.send(String(byte))
      advance(seconds: 1)
      #expect(connection.channel.isActive)
      advance(seconds: 1)
      if !connection.channel.isActive { break }
    }
    let text = try connection.output()
    #expect(text.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"), "\(text)")
    #expect(text.contains("Connection: close"))
    #expect(
      text.hasSuffix(#"{"error":"request not received in time; send the head and body promptly"}"# + "\n"))
    #expect(!connection.channel.isActive)
    #expect(connection.responder.requests.isEmpty)
    #expect(metrics.prometheusText().contains(line: "raftdb_http_header_timeouts_total 1"))
  }

  @Test func theHeaderDeadlineCountsFromTheFirstByteNotFromTheConnection() throws {
    let connection = try #require(try connect())
    advance(seconds: 50)  // Idle, under the idle timeout.
    try connection.send("GET /key/a HTTP/1.1\r\n")
    advance(seconds: 9)
    #expect(connection.channel.isActive)
    try connection.send("\r\n")
    #expect(connection.responder.requests.count == 1, "complete within 10 s of its first byte")
    advance(seconds: 120)
    #expect(connection.channel.isActive, "a request at the node is never timed out")
    connection.responder.answer(0, "a")
    #expect(try connection.output().hasPrefix("HTTP/1.1 200 OK"))
  }

  @Test func aBodyTrickledByteByByteGets408AtTheBodyDeadline() throws {
    let connection = try #require(try connect())
    try connection.send("POST /key HTTP/1.1\r\nContent-Length: 16\r\n\r\n")
    #expect(budget.used == 16, "reserved at the head")
    for _ in 0..<5 {
      try connection.send("x")
      advance(seconds: 5)
    }
    advance(seconds: 4)
    #expect(connection.channel.isActive, "29 s after the head")
    advance(seconds: 1)
    let text = try connection.output()
    #expect(text.hasPrefix("HTTP/1.1 408 Request Timeout\r\n"), "\(text)")
    #expect(!connection.channel.isActive)
    #expect(budget.used == 0)
    #expect(metrics.prometheusText().contains(line: "raftdb_http_body_timeouts_total 1"))
  }

  @Test func pipelinedRequestsEachGetTheirOwnDeadline() throws {
    let connection = try #require(try connect())
    // The second request's head arrives while the first is at the node, and never completes.
    try connection.send("GET /key/a HTTP/1.1\r\n\r\n")
    try connection.send("GET /key/b HTTP/1.1\r\nX-Slow: ")
    advance(seconds: 30)
    #expect(connection.channel.isActive, "the first is at the node")
    connection.responder.answer(0, "a")
    #expect(try connection.output().hasPrefix("HTTP/1.1 200 OK"))
    advance(seconds: 9)
    #expect(connection.channel.isActive, "the second's head is due 10 s after the first was answered")
    advance(seconds: 1)
    #expect(try connection.output().hasPrefix("HTTP/1.1 408"))
    #expect(!connection.channel.isActive)
  }

  @Test func refusalsAreLoggedAtMostOncePerIntervalAndAllCounted() {
    let recorder = LogRecorder()
    let refusals = HTTPRefusals(
      metrics: metrics, logger: Logger(label: "test", factory: { _ in recorder }),
      summaryInterval: .seconds(10))
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    for second in 0..<30 {
      for _ in 0..<1000 { refusals.record(.headerTimeout, now: start + .seconds(Int64(second))) }
    }
    #expect(recorder.messages.count == 3, "\(recorder.messages)")
    #expect(
      recorder.messages.last?.contains("10000 request heads not complete") == true, "\(recorder.messages)")
    #expect(metrics.prometheusText().contains(line: "raftdb_http_header_timeouts_total 30000"))
  }

  @Test func suppressedRefusalsAreLoggedAtTheEndOfTheIntervalWithoutAnotherRefusal() {
    let recorder = LogRecorder()
    let refusals = HTTPRefusals(
      metrics: metrics, logger: Logger(label: "test", factory: { _ in recorder }),
      summaryInterval: .seconds(10),
      summaryLoop: loop)
    refusals.record(.evicted, now: loop.now)
    advance(seconds: 1)
    for _ in 0..<63 { refusals.record(.headerTimeout, now: loop.now) }
    #expect(recorder.messages.count == 1)
    advance(seconds: 9)
    #expect(recorder.messages.count == 2, "\(recorder.messages)")
    #expect(recorder.messages.last?.hasPrefix("HTTP limits: 63 request heads not complete") == true)
    advance(seconds: 60)
    #expect(recorder.messages.count == 2, "nothing more to say")
  }

  // MARK: Item 9: a full table

  @Test func aFullTableEvictsTheConnectionWaitingLongestNeverOneAtTheNode() throws {
    let registry = ConnectionRegistry(limit: 3, metrics: metrics)
    let atNode = try #require(try connect(registry))
    try atNode.send("GET /key/a HTTP/1.1\r\n\r\n")
    advance(seconds: 1)
    let slow = try #require(try connect(registry))
    try slow.send("GET /key/slow HTTP/1.1\r\n")
    advance(seconds: 1)
    let idle = try #require(try connect(registry))
    advance(seconds: 1)

    let newcomer = try #require(try connect(registry), "admitted in place of the slow one")
    #expect(try slow.output().hasPrefix("HTTP/1.1 408"), "it was inside a request")
    #expect(!slow.channel.isActive)
    #expect(atNode.channel.isActive && idle.channel.isActive)
    try newcomer.send("GET /now HTTP/1.1\r\n\r\n")
    #expect(try newcomer.output().hasPrefix("HTTP/1.1 200 OK"))

    advance(seconds: 1)
    let second = try #require(try connect(registry))
    #expect(!idle.channel.isActive, "the idle one is next (waiting since before the newcomer)")
    #expect(try idle.output().isEmpty, "nothing to answer: closed without a word")
    #expect(atNode.channel.isActive)
    loop.run()  // Close futures complete on the loop.
    #expect(registry.count == 3)

    // Everyone busy: refused, as before.
    try newcomer.send("GET /key/b HTTP/1.1\r\n\r\n")
    try second.send("GET /key/c HTTP/1.1\r\n\r\n")
    #expect(try connect(registry) == nil)
    #expect(atNode.channel.isActive && newcomer.channel.isActive && second.channel.isActive)
    let text = String(decoding: metrics.prometheusText(), as: UTF8.self)
    #expect(text.contains(line: "raftdb_http_evicted_connections_total 2"), "\(text)")
    #expect(text.contains(line: "raftdb_http_refused_connections_total 1"))
  }

  @Test func anEvictedConnectionWithARequestAtTheNodeClosesOnlyAfterItsAnswer() throws {
    let connection = try #require(try connect())
    try connection.send("GET /key/a HTTP/1.1\r\n\r\n")
    connection.channel.pipeline.fireUserInboundEventTriggered(ConnectionEvictedEvent())
    #expect(connection.channel.isActive)
    connection.responder.answer(0, "a")
    let text = try connection.output()
    #expect(text.hasPrefix("HTTP/1.1 200 OK"))
    #expect(text.contains("connection: close") || text.contains("Connection: close"), "\(text)")
    #expect(!connection.channel.isActive)
  }

  // MARK: Item 10: the budget of buffered bodies

  @Test func aBodyTheBudgetCannotHoldIsRefused503BeforeAnyOfItIsKept() throws {
    let first = try #require(try connect())
    try first.send("POST /key HTTP/1.1\r\nContent-Length: 16\r\n\r\n{\"a\":")
    let second = try #require(try connect())
    try second.send("POST /key HTTP/1.1\r\nContent-Length: 16\r\n\r\n")
    #expect(budget.used == 32)

    let expecting = try #require(try connect())
    try expecting.send("POST /key HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    let refusal = try expecting.output()
    #expect(refusal.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"), "refused before the body is sent")
    #expect(refusal.contains("Retry-After: 1"))
    #expect(refusal.hasSuffix(#"-max-buffered-request-bytes); retry shortly"}"# + "\n"), "\(refusal)")
    #expect(!expecting.channel.isActive)

    let plain = try #require(try connect())
    try plain.send("POST /key HTTP/1.1\r\nContent-Length: 2\r\n\r\n")
    #expect(try plain.output().isEmpty, "the body is read and dropped first")
    try plain.send("{}")
    #expect(try plain.output().hasPrefix("HTTP/1.1 503"))
    #expect(!plain.channel.isActive)
    #expect(plain.responder.requests.isEmpty && expecting.responder.requests.isEmpty)
    #expect(budget.used == 32)

    try first.channel.close().wait()
    #expect(budget.used == 16, "a closed connection returns its reservation")
    try second.send(String(repeating: " ", count: 14) + "{}")
    #expect(second.responder.requests.count == 1)
    #expect(budget.used == 16, "held while the request is at the node")
    second.responder.answer(0, "ok")
    #expect(budget.used == 0, "and returned when it is answered")
    #expect(metrics.prometheusText().contains(line: "raftdb_http_buffer_refusals_total 2"))
  }

  @Test func aChunkedBodyReservesAsItGrowsAndIsRefusedWhenTheBudgetRunsOut() throws {
    let chunked = "POST /key HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    let first = try #require(try connect())
    try first.send(chunked + "a\r\n\(String(repeating: "x", count: 10))\r\n")
    #expect(budget.used == 10)
    let second = try #require(try connect())
    try second.send(chunked + "10\r\n\(String(repeating: "y", count: 16))\r\n")
    #expect(budget.used == 26)
    try first.send("4\r\nxxxx\r\n")
    #expect(budget.used == 30)
    let third = try #require(try connect())
    try third.send(chunked + "1\r\nz\r\n")
    #expect(budget.used == 31)
    try third.send("2\r\nzz\r\n")
    #expect(budget.used == 30, "31 + 2 > 32: refused, and its byte returned")
    #expect(try third.output().isEmpty, "the rest is read and dropped first")
    try third.send("0\r\n\r\n")
    #expect(try third.output().hasPrefix("HTTP/1.1 503"))
    #expect(!third.channel.isActive && third.responder.requests.isEmpty)
    try first.send("0\r\n\r\n")
    first.responder.answer(0, "ok")
    try second.send("0\r\n\r\n")
    second.responder.answer(0, "ok")
    #expect(try first.output().hasPrefix("HTTP/1.1 200") && second.output().hasPrefix("HTTP/1.1 200"))
    #expect(budget.used == 0)
  }

  /// Every way a request with a reserved body can end returns the reservation: a leak here would
  /// slowly refuse every body.
  @Test(arguments: [
    "answered", "closed mid-body", "closed mid-chunked-body", "closed at the node, answered later",
    "body deadline", "evicted mid-body", "over the limit mid-chunked-body", "bad chunk size",
    "idle event mid-body",
  ])
  func theBudgetReturnsToZeroOnEveryPath(_ path: String) throws {
    let c = try #require(try connect())
    let lengthHead = "POST /key HTTP/1.1\r\nContent-Length: 16\r\n\r\n{\"a\":"
    let chunkedHead = "POST /key HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{\"a\":1\r\n"
    switch path {
    case "answered":
      try c.send(lengthHead + #""123456789"}"#)
      c.responder.answer(0, "ok")
    case "closed mid-body":
      try c.send(lengthHead)
      try c.channel.close().wait()
    case "closed mid-chunked-body":
      try c.send(chunkedHead)
      try c.channel.close().wait()
    case "closed at the node, answered later":
      try c.send(lengthHead + #""123456789"}"#)
      try c.channel.close().wait()
      c.responder.answer(0, "late")
    case "body deadline":
      try c.send(lengthHead)
      advance(seconds: 31)
    case "evicted mid-body":
      try c.send(lengthHead)
      c.channel.pipeline.fireUserInboundEventTriggered(ConnectionEvictedEvent())
    case "over the limit mid-chunked-body":
      try c.send(chunkedHead + "f\r\n\(String(repeating: "x", count: 15))\r\n")
      try c.send("20\r\n\(String(repeating: "x", count: 32))\r\n")
    case "bad chunk size":
      try c.send(chunkedHead + "zz\r\n")
    case "idle event mid-body":
      try c.send(lengthHead)
      c.channel.pipeline.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.read)
    default:
      Issue.record("unknown path \(path)")
    }
    _ = try? c.channel.finish()
    #expect(budget.used == 0, "\(path): \(budget.used) bytes still reserved")
  }
}

extension String {
  /// Whether one of the lines is exactly `line`.
  func contains(line: String) -> Bool { split(separator: "\n").contains { $0 == line } }
}

extension [UInt8] {
  func contains(line: String) -> Bool { String(decoding: self, as: UTF8.self).contains(line: line) }
}

/// Keeps the messages logged through it.
final class LogRecorder: LogHandler, @unchecked Sendable {
  // Unchecked: used from the test's thread only.
  var messages: [String] = []
  var metadata: Logger.Metadata = [:]
  var logLevel: Logger.Level = .trace
  subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }
  func log(event: LogEvent) { messages.append(event.message.description) }
}
