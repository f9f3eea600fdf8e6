import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// The bounds on what one client connection may send and how slowly.
struct HTTPLimits: Sendable {
  /// Largest request body accepted (`-max-request-bytes`).
  var maxBodyBytes: Int
  /// From the first byte of a request to the end of its head (`-http-header-timeout`). Not restarted
  /// by further bytes: a client sending one byte every few seconds is closed at this deadline all the
  /// same, which is what the idle timeout alone did not do (it restarts on every byte).
  var headerTimeout: TimeAmount
  /// From the end of a request's head to the end of its body (`-http-body-timeout`).
  var bodyTimeout: TimeAmount
  /// Silence on a connection with no request begun (`-http-idle-timeout`).
  var idleTimeout: TimeAmount

  init(maxBodyBytes: Int, headerTimeout: TimeAmount, bodyTimeout: TimeAmount, idleTimeout: TimeAmount) {
    precondition(maxBodyBytes > 0 && headerTimeout > .zero && bodyTimeout > .zero && idleTimeout > .zero)
    self.maxBodyBytes = maxBodyBytes
    self.headerTimeout = headerTimeout
    self.bodyTimeout = bodyTimeout
    self.idleTimeout = idleTimeout
  }
}

/// The bytes of request bodies held in memory across all connections of a server, bounded by
/// `-max-buffered-request-bytes`. Without it each connection could hold a nearly complete body of
/// `-max-request-bytes`, and `-max-connections` of them came to 32 GiB at the defaults.
///
/// A body with a `Content-Length` reserves its whole length when its head arrives (so a refusal comes
/// before any of it is read); a chunked body reserves each chunk as it arrives. The reservation is
/// released when the request is answered or its connection closes, whichever comes first. Shared by
/// every event loop, so it is a `Mutex` (held for a few instructions, never across I/O); the gauge is
/// set under it so that concurrent changes reach it in order.
final class RequestBodyBudget: Sendable {
  let limitBytes: Int
  private let usedBytes = Mutex(0)
  private let gauge: CoreMetrics.Gauge?

  init(limitBytes: Int, gauge: CoreMetrics.Gauge? = nil) {
    precondition(limitBytes >= 0)
    self.limitBytes = limitBytes
    self.gauge = gauge
  }

  /// The bytes reserved now.
  var used: Int { usedBytes.withLock { $0 } }

  /// Reserves `bytes` if that keeps the total within the limit.
  func tryReserve(_ bytes: Int) -> Bool {
    precondition(bytes >= 0)
    return usedBytes.withLock { used in
      guard bytes <= limitBytes - used else { return false }
      used += bytes
      gauge?.record(used)
      return true
    }
  }

  /// Returns bytes reserved earlier.
  func release(_ bytes: Int) {
    precondition(bytes >= 0)
    usedBytes.withLock { used in
      precondition(used >= bytes, "released \(bytes) bytes of \(used) reserved")
      used -= bytes
      gauge?.record(used)
    }
  }
}

/// Where a connection is, for the connection registry's choice of whom to evict: since when it has
/// been waiting for its client (idle between requests, or receiving a request's head or body), or
/// busy (a request at the node, an answer being written). Written by the connection's loop, read by
/// whichever loop accepts a connection when the table is full.
final class ConnectionActivity: Sendable {
  /// Nanoseconds of `NIODeadline` since which the client owes us bytes; `busy` while it does not.
  private let waitingSince = Atomic<Int64>(ConnectionActivity.busy)
  static var busy: Int64 { .max }

  init() {}

  func waiting(since: NIODeadline) {
    waitingSince.store(Int64(clamping: since.uptimeNanoseconds), ordering: .relaxed)
  }
  func markBusy() { waitingSince.store(Self.busy, ordering: .relaxed) }

  /// Since when the connection has been waiting for its client, or nil while it is busy.
  var waitingSinceNanoseconds: Int64? {
    let value = waitingSince.load(ordering: .relaxed)
    return value == Self.busy ? nil : value
  }
}

/// Counts the requests and connections refused for a limit, in metrics, and logs them without
/// letting an attacker choose the number of log lines: the first refusal is logged at once, later
/// ones are summed and logged at most once per `summaryInterval`: by the next refusal after it, or
/// by a one-shot task on `summaryLoop` at its end (at most one pending; the loop's shutdown drops it).
final class HTTPRefusals: Sendable {
  enum Reason: CaseIterable, Sendable {
    case headerTimeout, bodyTimeout, evicted, bufferBudget

    var phrase: String {
      switch self {
      case .headerTimeout: "request heads not complete within -http-header-timeout (408)"
      case .bodyTimeout: "request bodies not complete within -http-body-timeout (408)"
      case .evicted: "connections evicted from a full table (longest waiting for their client)"
      case .bufferBudget: "requests refused for -max-buffered-request-bytes (503)"
      }
    }
  }

  private struct State {
    var counts: [Reason: Int] = [:]
    var lastLogged: NIODeadline?
    var flushScheduled = false
  }
  private let state = Mutex(State())
  private let metrics: NodeMetrics
  private let logger: Logger
  private let summaryInterval: TimeAmount
  private let summaryLoop: (any EventLoop)?

  init(
    metrics: NodeMetrics, logger: Logger, summaryInterval: TimeAmount = .seconds(10),
    summaryLoop: (any EventLoop)? = nil
  ) {
    self.metrics = metrics
    self.logger = logger
    self.summaryInterval = summaryInterval
    self.summaryLoop = summaryLoop
  }

  func record(_ reason: Reason, now: NIODeadline = .now()) {
    switch reason {
    case .headerTimeout: metrics.headerTimeouts.increment()
    case .bodyTimeout: metrics.bodyTimeouts.increment()
    case .evicted: metrics.evictedConnections.increment()
    case .bufferBudget: metrics.bufferRefusals.increment()
    }
    let (summary, flushAt): ([Reason: Int]?, NIODeadline?) = state.withLock { state in
      state.counts[reason, default: 0] += 1
      if let last = state.lastLogged, now - last < summaryInterval {
        guard summaryLoop != nil, !state.flushScheduled else { return (nil, nil) }
        state.flushScheduled = true
        return (nil, last + summaryInterval)
      }
      state.lastLogged = now
      defer { state.counts = [:] }
      return (state.counts, nil)
    }
    if let flushAt, let summaryLoop {
      summaryLoop.scheduleTask(deadline: flushAt) { self.flush(now: summaryLoop.now) }
    }
    if let summary { log(summary) }
  }

  /// Logs what was summed since the last line, if anything.
  private func flush(now: NIODeadline) {
    let summary: [Reason: Int]? = state.withLock { state in
      state.flushScheduled = false
      guard !state.counts.isEmpty else { return nil }
      state.lastLogged = now
      defer { state.counts = [:] }
      return state.counts
    }
    if let summary { log(summary) }
  }

  private func log(_ summary: [Reason: Int]) {
    let text = Reason.allCases.compactMap { reason in summary[reason].map { "\($0) \(reason.phrase)" } }
    logger.warning(
      "HTTP limits: \(text.joined(separator: ", ")); further refusals are summed and logged at most every \(summaryInterval.nanoseconds / 1_000_000_000) s"
    )
  }
}

/// Tells a connection that the registry has given its slot to a newcomer.
struct ConnectionEvictedEvent: Sendable {}

/// The first handler of a connection, before the HTTP decoder: it sees each request's first byte, so
/// that the head's deadline counts from there, and holds the deadlines of the head and the body.
/// `HTTPConnectionHandler` tells it when a head is complete, when a request is complete, and when it
/// has been answered. A connection past a deadline is answered 408, if it can take the bytes, and
/// closed. The answer is written here, below the HTTP codec, because a head that never completed is
/// no request the codec's pipelining handler would let anyone answer.
///
/// One timer per connection, not one per request: it is armed at most `min(headerTimeout,
/// bodyTimeout)` ahead, so no later phase can need it earlier, and rechecks the current deadline when
/// it fires; a busy keep-alive connection therefore wakes once per that interval, not per request.
final class HTTPRequestDeadlineHandler: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = ByteBuffer
  typealias InboundOut = ByteBuffer
  typealias OutboundOut = ByteBuffer

  private enum Phase {
    /// Between requests: the idle timeout applies.
    case idle
    /// Bytes of a request's head have arrived since `started`.
    case head(started: NIODeadline)
    /// The head is complete, the body is due.
    case body(started: NIODeadline, version: HTTPVersion)
    /// The request is at the node or being answered; `nextBegun` is whether bytes of the next one
    /// arrived meanwhile (held back by the pipelining handler or still in the decoder). Bytes that
    /// came in the same read as the end of this request are not seen as such: the next head is then
    /// bounded by the idle timeout until its next byte arrives, which starts its deadline, so a slow
    /// client gains at most one idle timeout that way.
    case busy(nextBegun: Bool)
    case closed
  }

  private let limits: HTTPLimits
  private let activity: ConnectionActivity
  private let refusals: HTTPRefusals?
  private var phase = Phase.idle
  /// Whether a `ChannelShouldQuiesceEvent` has gone down the pipeline (eviction and shutdown may both
  /// send one; NIO's pipelining handler expects one).
  private(set) var quiesced = false
  /// Called when the connection is asked to close (shutdown, eviction): a streaming response, which
  /// never ends by itself, ends then.
  var onQuiesce: (() -> Void)?
  private var context: ChannelHandlerContext?
  private var timer: Scheduled<Void>?
  private var timerInterval: TimeAmount { min(limits.headerTimeout, limits.bodyTimeout) }

  init(limits: HTTPLimits, activity: ConnectionActivity, refusals: HTTPRefusals?) {
    self.limits = limits
    self.activity = activity
    self.refusals = refusals
  }

  func handlerAdded(context: ChannelHandlerContext) {
    self.context = context
    activity.waiting(since: context.eventLoop.now)
  }

  func handlerRemoved(context: ChannelHandlerContext) {
    timer?.cancel()
    timer = nil
    phase = .closed
    self.context = nil
  }

  func channelInactive(context: ChannelHandlerContext) {
    phase = .closed
    activity.markBusy()
    timer?.cancel()
    timer = nil
    context.fireChannelInactive()
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch phase {
    case .idle:
      let now = context.eventLoop.now
      phase = .head(started: now)
      activity.waiting(since: now)
      arm(context, deadline: now + limits.headerTimeout)
    case .busy:
      phase = .busy(nextBegun: true)
    case .head, .body:
      break
    case .closed:
      // Answered 408 (or evicted) and closing: a request completed now must not reach the node
      // and get a second answer.
      return
    }
    context.fireChannelRead(data)
  }

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is ChannelShouldQuiesceEvent {
      quiesce(context)
      return
    }
    guard event is ConnectionEvictedEvent else {
      context.fireUserInboundEventTriggered(event)
      return
    }
    refusals?.record(.evicted)
    switch phase {
    case .idle:
      close(context, answering: nil)
    case .head:
      close(context, answering: .http1_1)
    case .body(_, let version):
      close(context, answering: version)
    case .busy:
      // A request at the node is never cut off: close once it is answered.
      quiesce(context)
    case .closed:
      break
    }
  }

  private func quiesce(_ context: ChannelHandlerContext) {
    guard !quiesced else { return }
    quiesced = true
    onQuiesce?()
    context.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
  }

  // MARK: Told by the connection handler

  /// A request's head is complete: its body is due within the body timeout.
  func headReceived(version: HTTPVersion) {
    guard let context else { return }
    let now = context.eventLoop.now
    let started: NIODeadline
    switch phase {
    case .head(let begun): started = begun
    case .idle, .busy, .body: started = now  // Delivered from the pipelining handler's buffer.
    case .closed: return
    }
    phase = .body(started: started, version: version)
    activity.waiting(since: started)
    arm(context, deadline: now + limits.bodyTimeout)
  }

  /// The request is complete (or refused): nothing more is owed by the client until it is answered.
  func requestReceived() {
    guard case .body = phase else { return }
    phase = .busy(nextBegun: false)
    activity.markBusy()
  }

  /// The request has been answered: the connection waits for the next one, whose head is already on
  /// its way if bytes arrived meanwhile. Called before the answer's end is written, since writing it
  /// may deliver the next pipelined request at once.
  func answered() {
    guard let context else { return }
    let now = context.eventLoop.now
    switch phase {
    case .busy(nextBegun: true):
      phase = .head(started: now)
      arm(context, deadline: now + limits.headerTimeout)
    case .busy(nextBegun: false), .head, .body, .idle:
      phase = .idle
    case .closed:
      return
    }
    activity.waiting(since: now)
  }

  // MARK: Deadlines

  private var deadline: NIODeadline? {
    switch phase {
    case .head(let started): started + limits.headerTimeout
    case .body(let started, _): started + limits.bodyTimeout
    case .idle, .busy, .closed: nil
    }
  }

  /// Makes sure the timer fires no later than `deadline`. It is never armed further ahead than
  /// `timerInterval`, and every deadline lies at least that far ahead when it is set, so an armed
  /// timer is never late for a new one.
  private func arm(_ context: ChannelHandlerContext, deadline: NIODeadline) {
    guard timer == nil else { return }
    let at = min(deadline, context.eventLoop.now + timerInterval)
    timer = context.eventLoop.assumeIsolated().scheduleTask(deadline: at) { [self] in
      timer = nil
      fire()
    }
  }

  private func fire() {
    guard let context else { return }
    let now = context.eventLoop.now
    switch phase {
    case .head where now >= deadline!:
      refusals?.record(.headerTimeout)
      close(context, answering: .http1_1)
    case .body(_, let version) where now >= deadline!:
      refusals?.record(.bodyTimeout)
      close(context, answering: version)
    case .head, .body:
      arm(context, deadline: deadline!)
    case .idle, .busy, .closed:
      break  // Disarmed until the next request begins.
    }
  }

  /// Answers 408 (when `version` is given and the socket can take it) and closes.
  private func close(_ context: ChannelHandlerContext, answering version: HTTPVersion?) {
    phase = .closed
    activity.markBusy()
    guard let version, context.channel.isWritable else {
      context.close(promise: nil)
      return
    }
    // Ends with a newline, as every JSON answer does (`APIResponse.json`).
    let body = #"{"error":"request not received in time; send the head and body promptly"}"# + "\n"
    let text =
      "HTTP/\(version.major).\(version.minor) 408 Request Timeout\r\nContent-Type: application/json\r\n"
      + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
    context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: text)))
      .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
  }
}

extension ChannelPipeline.SynchronousOperations {
  /// The handlers of one client connection, in order: the idle timeout, the deadlines, NIO's HTTP/1.1
  /// codec with its pipelining handler, and `HTTPConnectionHandler`. The server and the tests build
  /// connections with this, so the tests exercise the real pipeline.
  func addRaftDBHTTPHandlers<Responder: HTTPResponding>(
    api: Responder, limits: HTTPLimits, budget: RequestBodyBudget, activity: ConnectionActivity,
    refusals: HTTPRefusals?
  ) throws {
    let deadlines = HTTPRequestDeadlineHandler(limits: limits, activity: activity, refusals: refusals)
    try addHandler(IdleStateHandler(readTimeout: limits.idleTimeout))
    try addHandler(deadlines)
    try configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: false)
    try addHandler(
      HTTPConnectionHandler(
        api: api, maxBodyBytes: limits.maxBodyBytes, budget: budget, deadlines: deadlines, refusals: refusals)
    )
  }
}
