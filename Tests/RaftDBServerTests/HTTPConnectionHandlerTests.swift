import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import RaftDBServer

/// The connection handler on an `EmbeddedChannel`, with a stand-in for the API whose answers the
/// test completes by hand: deterministic checks of ordering, limits and closing.
@Suite struct HTTPConnectionHandlerTests {
  /// Records requests and hands back futures the test completes.
  final class ScriptedResponder: HTTPResponding, @unchecked Sendable {
    // Unchecked: an EmbeddedChannel runs everything on the test's thread.
    var requests: [APIRequest] = []
    var pending: [EventLoopPromise<APIResponse>] = []
    var recorded: [(APIRoute, Int)] = []

    func respond(to request: APIRequest, on eventLoop: any EventLoop) -> (
      APIRoute, EventLoopFuture<APIResponse>
    ) {
      if request.head.uri.hasPrefix("/now") {
        return (.other, eventLoop.makeSucceededFuture(.exactly(Array("now".utf8))))
      }
      requests.append(request)
      let promise = eventLoop.makePromise(of: APIResponse.self)
      pending.append(promise)
      return (.key, promise.futureResult)
    }

    func recordRequest(route: APIRoute, status: Int, nanoseconds: Int64) { recorded.append((route, status)) }

    func answer(_ index: Int, _ text: String) {
      pending[index].succeed(.exactly(Array(text.utf8)))
    }
  }

  let responder = ScriptedResponder()
  let channel = EmbeddedChannel()
  let budget = RequestBodyBudget(limitBytes: 1 << 20)

  /// A 16-byte body limit, and the server's default deadlines.
  static let limits = HTTPLimits(
    maxBodyBytes: 16, headerTimeout: .seconds(10), bodyTimeout: .seconds(30), idleTimeout: .seconds(60))

  init() throws {
    try channel.pipeline.syncOperations.addRaftDBHTTPHandlers(
      api: responder, limits: Self.limits, budget: budget, activity: ConnectionActivity(), refusals: nil)
    try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8091)).wait()
  }

  func send(_ text: String) throws { try channel.writeInbound(ByteBuffer(string: text)) }

  func output() throws -> String {
    var text = ""
    while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
      text += buffer.readString(length: buffer.readableBytes) ?? ""
    }
    return text
  }

  @Test func aPipelinedRequestWaitsForTheAnswerBeforeIt() throws {
    try send("GET /key/a HTTP/1.1\r\n\r\nGET /key/b HTTP/1.1\r\n\r\n")
    #expect(responder.requests.map(\.head.uri) == ["/key/a"], "the second is held back")
    #expect(try output().isEmpty)
    responder.answer(0, "first")
    #expect(responder.requests.map(\.head.uri) == ["/key/a", "/key/b"])
    responder.answer(1, "second")
    let text = try output()
    let first = try #require(text.range(of: "first"))
    let second = try #require(text.range(of: "second"))
    #expect(first.upperBound <= second.lowerBound)
    #expect(channel.isActive, "keep-alive")
    #expect(responder.recorded.map(\.1) == [200, 200])
  }

  @Test func connectionCloseClosesAfterTheAnswer() throws {
    try send("GET /key/a HTTP/1.1\r\nConnection: close\r\n\r\n")
    #expect(channel.isActive)
    responder.answer(0, "bye")
    let text = try output()
    #expect(text.contains("Connection: close"))
    #expect(text.hasSuffix("bye"))
    #expect(!channel.isActive)
  }

  @Test func aBodyOverTheLimitIsDroppedThenRefused() throws {
    try send("POST /key HTTP/1.1\r\nContent-Length: 20\r\n\r\n")
    try send(String(repeating: "x", count: 20))
    #expect(responder.requests.isEmpty, "never reaches the API")
    let text = try output()
    #expect(text.hasPrefix("HTTP/1.1 413 Payload Too Large"))
    #expect(text.hasSuffix(#"{"error":"request body exceeds the 16-byte limit"}"# + "\n"))
    #expect(!channel.isActive)
  }

  @Test func aChunkedBodyFarOverTheLimitIsRefusedWithoutWaitingForItsEnd() throws {
    try send("POST /key HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    try send("10\r\n\(String(repeating: "x", count: 16))\r\n")
    #expect(try output().isEmpty, "at the limit: still reading")
    try send("10\r\n\(String(repeating: "x", count: 16))\r\n10\r\n\(String(repeating: "x", count: 16))\r\n")
    #expect(try output().hasPrefix("HTTP/1.1 413"), "past twice the limit: refused before the end")
    #expect(responder.requests.isEmpty)
  }

  @Test func aBodyWithinTheLimitArrivesWhole() throws {
    try send(
      "POST /key HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n{\"a\":\"1\"\r\n1\r\n}\r\n0\r\n\r\n")
    let body = try #require(responder.requests.first?.body)
    #expect(String(buffer: body) == #"{"a":"1"}"#)
  }

  @Test func aFailedAnswerBecomesA500WithJSON() throws {
    struct Broken: Error {}
    try send("GET /key/a HTTP/1.1\r\n\r\n")
    responder.pending[0].fail(Broken())
    let text = try output()
    #expect(text.hasPrefix("HTTP/1.1 500 Internal Server Error"))
    #expect(text.contains(#"{"error":""#))
  }

  @Test func headGetsHeadersWithoutABody() throws {
    try send("HEAD /key/a HTTP/1.1\r\n\r\n")
    responder.answer(0, "invisible")
    let text = try output()
    #expect(text.contains("Content-Length: 9"))
    #expect(!text.contains("invisible"))
  }

  @Test func garbageGetsAJSON400AndTheConnectionCloses() throws {
    try send("NOT HTTP AT ALL\r\n\r\n")
    let text = try output()
    #expect(text.hasPrefix("HTTP/1.1 400 Bad Request"))
    #expect(text.contains(#"{"error":"malformed HTTP request"#))
    #expect(!channel.isActive)
  }

  @Test func aBurstOfPipelinedRequestsAnsweredAtOnceDoesNotDeepenTheStack() throws {
    // Without the bound on nesting, each of these answers was written inside the previous one's.
    let burst = 20_000
    try send("GET /key/slow HTTP/1.1\r\n\r\n" + String(repeating: "GET /now HTTP/1.1\r\n\r\n", count: burst))
    responder.answer(0, "slow")
    var answered = 0
    for _ in 0..<burst {
      channel.embeddedEventLoop.run()
      let text = try output()
      answered += text.components(separatedBy: "HTTP/1.1 200 OK").count - 1
      if answered == burst + 1 { break }
    }
    #expect(answered == burst + 1)
    #expect(responder.recorded.count == burst + 1)
  }

  @Test func silenceClosesAnIdleConnectionButNotOneAwaitingItsAnswer() throws {
    try send("GET /key/a HTTP/1.1\r\n\r\n")
    channel.pipeline.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.read)
    #expect(channel.isActive, "a request is pending")
    responder.answer(0, "a")
    #expect(try output().hasSuffix("a"))
    channel.pipeline.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.read)
    #expect(!channel.isActive)
  }

  @Test func http10ClientsGetNo100Continue() throws {
    try send("POST /key HTTP/1.0\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    #expect(try output().isEmpty)
    try send("{}")
    #expect(responder.requests.count == 1)
  }

  @Test func responsesCarryADateHeader() throws {
    try send("GET /now HTTP/1.1\r\n\r\n")
    #expect(try output().contains("Date: "))
    #expect(HTTPDateCache.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
    #expect(HTTPDateCache.format(0) == "Thu, 01 Jan 1970 00:00:00 GMT")
  }

  @Test func absoluteFormTargetsAreRoutedByTheirPath() {
    let request = APIRequest(
      head: HTTPRequestHead(
        version: .http1_1, method: .GET, uri: "http://127.0.0.1:8091/key/a%20b?level=stale"),
      body: nil)
    #expect(request.target == "/key/a%20b?level=stale")
    #expect(request.path == "/key/a%20b")
    #expect(request.queryParameter("level") == "stale")
    let query = APIRequest(
      head: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/key/a?x=1&level=a+b%21&level=second"),
      body: nil)
    #expect(query.queryParameter("level") == "a b!", "the first, with + as a space and escapes decoded")
    #expect(query.queryParameter("missing") == nil)
    let bare = APIRequest(head: HTTPRequestHead(version: .http1_1, method: .GET, uri: "http://h"), body: nil)
    #expect(bare.path == "/")
  }
}

extension APIResponse {
  /// A 200 whose body is exactly `body` (`json` would add its newline), so that these tests can
  /// find the bytes they answered with.
  static func exactly(_ body: [UInt8]) -> APIResponse {
    APIResponse(status: .ok, headers: ["Content-Type": "application/json"], body: body)
  }
}
