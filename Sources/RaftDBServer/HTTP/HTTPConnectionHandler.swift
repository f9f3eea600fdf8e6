import NIOCore
import NIOHTTP1

/// What answers the requests a connection gathers: the node's API in the server, a scripted
/// stand-in in the handler's tests.
protocol HTTPResponding: Sendable {
  /// The route (for metrics) and the answer, a future on `eventLoop`.
  func respond(to request: APIRequest, on eventLoop: any EventLoop) -> (
    APIRoute, EventLoopFuture<APIResponse>
  )
  /// Counts a finished request.
  func recordRequest(route: APIRoute, status: Int, nanoseconds: Int64)
}

/// One HTTP/1.1 connection: gathers a request (head and a bounded body), hands it to the API and
/// writes the answer. It sits behind NIO's `HTTPServerPipelineHandler`, which holds back a
/// pipelined request until the previous response has ended, so there is at most one request in
/// progress here; that handler also closes the connection when the server quiesces.
///
/// The body's bytes are reserved in the server-wide `RequestBodyBudget` before they are kept (the
/// whole `Content-Length` when the head arrives, a chunk at a time otherwise) and returned when the
/// request is answered or the connection closes; a request the budget cannot hold is answered 503.
/// The deadlines of the head and the body live in `HTTPRequestDeadlineHandler`, in front of the
/// codec, which this handler tells where each request stands.
final class HTTPConnectionHandler<Responder: HTTPResponding>: ChannelInboundHandler {
  typealias InboundIn = HTTPServerRequestPart
  typealias OutboundOut = HTTPServerResponsePart

  private enum State {
    case idle
    case receiving(HTTPRequestHead, body: ByteBuffer?, started: NIODeadline)
    /// The body is over the limit, or the budget cannot hold it: the rest is read and dropped (up
    /// to `discardLimit`), then `refusal` (413 or 503) is sent and the connection closed, so that the
    /// client sees it rather than a reset while it is still sending.
    case discarding(HTTPRequestHead, dropped: Int, started: NIODeadline, refusal: APIError)
    case responding
    /// A streaming body (a watch) is being written; the connection closes when it finishes.
    case streaming(any HTTPStreamingBody)
    case closing
  }

  private let api: Responder
  private let maxBodyBytes: Int
  private let discardLimit: Int
  private let budget: RequestBodyBudget
  private let deadlines: HTTPRequestDeadlineHandler
  private let refusals: HTTPRefusals?
  /// Bytes of `budget` this connection holds for the request in progress.
  private var reservedBytes = 0
  private var state = State.idle
  /// How many answers are being written inside one another. Writing a response's end makes NIO hand
  /// over the next pipelined request at once, and an answer that is ready at once (a `stale` read, an
  /// error) is written at once, so a burst of pipelined requests would otherwise nest one chain of
  /// calls per request and could exhaust the stack.
  private var nesting = 0
  private static var maxNesting: Int { 8 }
  private var dateCache = HTTPDateCache()

  init(
    api: Responder, maxBodyBytes: Int, budget: RequestBodyBudget, deadlines: HTTPRequestDeadlineHandler,
    refusals: HTTPRefusals?
  ) {
    self.api = api
    self.maxBodyBytes = maxBodyBytes
    self.budget = budget
    self.deadlines = deadlines
    self.refusals = refusals
    let (doubled, overflow) = maxBodyBytes.multipliedReportingOverflow(by: 2)
    discardLimit = overflow ? .max : doubled
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .head(let head):
      guard case .idle = state else { return }
      let started = NIODeadline.now()
      deadlines.headReceived(version: head.version)
      // HTTP/1.0 clients do not know 100 Continue (RFC 9110, 10.1.1).
      let expectsContinue =
        head.version != .http1_0
        && head.headers[canonicalForm: "expect"].contains { $0.lowercased() == "100-continue" }
      let length = head.headers.first(name: "content-length").flatMap(Int.init) ?? 0
      let refusal: APIError? = length > maxBodyBytes ? tooLarge : (reserve(length) ? nil : budgetSpent)
      if let refusal {
        if expectsContinue {
          // The client has not sent the body yet and will not until told to: refuse now.
          state = .responding
          finish(context, head, route: .other, started: started, refusal.response, keepAlive: false)
        } else {
          state = .discarding(head, dropped: 0, started: started, refusal: refusal)
        }
        return
      }
      if expectsContinue {
        context.writeAndFlush(
          wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
      }
      state = .receiving(head, body: nil, started: started)
    case .body(var chunk):
      switch state {
      case .receiving(let head, var body, let started):
        state = .responding  // Drops the enum's reference to `body`, so that appending does not copy.
        let size = (body?.readableBytes ?? 0) + chunk.readableBytes
        guard size <= maxBodyBytes else {
          releaseReservation()
          state = .discarding(head, dropped: size, started: started, refusal: tooLarge)
          return
        }
        // A chunked body reserves as it grows; one with a Content-Length reserved it all at its head.
        guard size <= reservedBytes || reserve(size - reservedBytes) else {
          releaseReservation()
          state = .discarding(head, dropped: size, started: started, refusal: budgetSpent)
          return
        }
        if body == nil { body = chunk } else { body!.writeBuffer(&chunk) }
        state = .receiving(head, body: body, started: started)
      case .discarding(let head, let dropped, let started, let refusal):
        let total = dropped + chunk.readableBytes
        if total > discardLimit {
          state = .responding
          finish(context, head, route: .other, started: started, refusal.response, keepAlive: false)
        } else {
          state = .discarding(head, dropped: total, started: started, refusal: refusal)
        }
      case .idle, .responding, .streaming, .closing:
        break
      }
    case .end:
      switch state {
      case .receiving(let head, let body, let started):
        state = .responding
        deadlines.requestReceived()
        dispatch(context, APIRequest(head: head, body: body), started: started)
      case .discarding(let head, _, let started, let refusal):
        state = .responding
        deadlines.requestReceived()
        finish(context, head, route: .other, started: started, refusal.response, keepAlive: false)
      case .idle, .responding, .streaming, .closing:
        break
      }
    }
  }

  /// A connection that has sent nothing for the idle timeout is closed, unless it is waiting for an
  /// answer (reads are paused then, so silence is expected).
  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    guard case IdleStateHandler.IdleStateEvent.read = event else {
      context.fireUserInboundEventTriggered(event)
      return
    }
    switch state {
    case .idle, .receiving, .discarding:
      state = .closing
      context.close(promise: nil)
    case .responding, .streaming, .closing:
      break
    }
  }

  func channelWritabilityChanged(context: ChannelHandlerContext) {
    if case .streaming(let body) = state { body.writabilityChanged(context.channel.isWritable) }
    context.fireChannelWritabilityChanged()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    guard context.channel.isActive else {
      // Closing already (a deadline, an eviction): the decoder's complaint about the unfinished
      // request at the end of the stream has no one to go to.
      state = .closing
      return
    }
    if case .idle = state, deadlines.quiesced {
      // The server is closing this connection after the last answer (shutdown, eviction), and
      // NIO's pipelining handler takes no further response: garbage after that answer goes unanswered.
      state = .closing
      context.close(promise: nil)
      return
    }
    switch (error, state) {
    case (is HTTPParserError, .idle), (is HTTPParserError, .receiving), (is HTTPParserError, .discarding):
      // Unparseable input: say so in JSON, then close (the parser cannot resynchronise).
      state = .responding
      let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/")
      let response = APIError.badRequest("malformed HTTP request: \(error)").response
      finish(context, head, route: .other, started: .now(), response, keepAlive: false)
    default:
      state = .closing
      context.close(promise: nil)
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    stopStream()
    state = .closing
    releaseReservation()
    context.fireChannelInactive()
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    stopStream()
    state = .closing
    releaseReservation()
  }

  private func stopStream() {
    deadlines.onQuiesce = nil
    if case .streaming(let body) = state {
      state = .closing
      body.stop()
    }
  }

  private var tooLarge: APIError {
    .payloadTooLarge("request body exceeds the \(maxBodyBytes)-byte limit")
  }

  private var budgetSpent: APIError {
    .unavailable("the server is holding too many request bodies (-max-buffered-request-bytes); retry shortly")
  }

  /// Reserves `bytes` more of the budget for the request in progress; counts a refusal.
  private func reserve(_ bytes: Int) -> Bool {
    guard bytes > 0 else { return true }
    guard budget.tryReserve(bytes) else {
      refusals?.record(.bufferBudget)
      return false
    }
    reservedBytes += bytes
    return true
  }

  private func releaseReservation() {
    guard reservedBytes > 0 else { return }
    budget.release(reservedBytes)
    reservedBytes = 0
  }

  private func dispatch(_ context: ChannelHandlerContext, _ request: APIRequest, started: NIODeadline) {
    let (route, response) = api.respond(to: request, on: context.eventLoop)
    response.assumeIsolated().whenComplete { result in
      let answer: APIResponse
      switch result {
      case .success(let response): answer = response
      case .failure(let error): answer = APIError.internalError("\(error)").response
      }
      let keepAlive = request.head.isKeepAlive
      guard self.nesting < Self.maxNesting else {
        // Deep inside earlier answers: write this one from a fresh stack on the next loop turn.
        context.eventLoop.assumeIsolated().execute {
          self.finish(context, request.head, route: route, started: started, answer, keepAlive: keepAlive)
        }
        return
      }
      self.nesting += 1
      defer { self.nesting -= 1 }
      self.finish(context, request.head, route: route, started: started, answer, keepAlive: keepAlive)
    }
  }

  /// Writes the response and either readies the connection for the next request or closes it.
  private func finish(
    _ context: ChannelHandlerContext, _ head: HTTPRequestHead, route: APIRoute, started: NIODeadline,
    _ response: APIResponse, keepAlive: Bool
  ) {
    guard case .responding = state else {
      response.stream?.stop()  // The connection went before its answer: nobody reads the stream.
      return
    }
    // Answered: the API is done with the body.
    releaseReservation()
    if let stream = response.stream {
      startStream(context, head, route: route, started: started, response, stream)
      return
    }
    var headers = response.headers
    headers.add(name: "Content-Length", value: String(response.body.count))
    headers.add(name: "Date", value: dateCache.now())
    if !keepAlive {
      headers.add(name: "Connection", value: "close")
    } else if head.version == .http1_0 {
      headers.add(name: "Connection", value: "keep-alive")
    }
    context.write(
      wrapOutboundOut(
        .head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))),
      promise: nil)
    if head.method != .HEAD && !response.body.isEmpty {
      context.write(
        wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))),
        promise: nil)
    }
    api.recordRequest(
      route: route, status: Int(response.status.code), nanoseconds: (NIODeadline.now() - started).nanoseconds)
    deadlines.answered()
    if keepAlive {
      // Idle before the end goes out: writing it may deliver the next pipelined request at once.
      state = .idle
      context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    } else {
      state = .closing
      context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
        context.close(promise: nil)
      }
    }
  }

  /// Writes a streaming response's head and hands the connection to its body until it finishes,
  /// then closes. The request stays "at the node" for the deadlines and the connection table (so
  /// that a watch is neither timed out nor evicted); a server shutdown ends the stream.
  private func startStream(
    _ context: ChannelHandlerContext, _ head: HTTPRequestHead, route: APIRoute, started: NIODeadline,
    _ response: APIResponse, _ stream: any HTTPStreamingBody
  ) {
    var headers = response.headers
    headers.add(name: "Date", value: dateCache.now())
    headers.add(name: "Connection", value: "close")
    context.writeAndFlush(
      wrapOutboundOut(
        .head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))),
      promise: nil)
    api.recordRequest(
      route: route, status: Int(response.status.code), nanoseconds: (NIODeadline.now() - started).nanoseconds)
    state = .streaming(stream)
    let output = HTTPStreamOutput(context: context) { [weak self] in
      guard let self, case .streaming = self.state else { return }
      self.state = .closing
      context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
        context.close(promise: nil)
      }
    }
    deadlines.onQuiesce = { [weak self] in
      guard let self, case .streaming(let body) = self.state else { return }
      body.stop()
      output.finish()
    }
    stream.start(output)
    if deadlines.quiesced { deadlines.onQuiesce?() }
  }
}
