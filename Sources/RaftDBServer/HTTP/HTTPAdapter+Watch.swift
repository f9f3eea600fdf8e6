import JSON
import KVStore
import KVWatch
import NIOCore
import NIOHTTP1
import RaftDBService

/// `GET /watch/{key}`: a watch as a Server-Sent Events stream (docs/API.md). Query parameters:
/// `prefix` or `from_key` (a range instead of one key), `rev` (the start revision), `prev_kv`,
/// `filter=noput|nodelete`, `progress_notify`. A `Last-Event-ID` header (what a browser's
/// EventSource sends when it reconnects) resumes after that revision and takes precedence over `rev`.
extension HTTPAdapter {
  static let watchParameters: Set<Substring> = [
    "prefix", "from_key", "rev", "prev_kv", "filter", "progress_notify",
  ]

  func watch(_ rawKey: Substring, _ request: APIRequest, on eventLoop: any EventLoop) throws
    -> EventLoopFuture<APIResponse>
  {
    try request.requireOnlyQueryParameters(Self.watchParameters)
    let key = Array(try decodeKey(rawKey).utf8)
    let prefix = try flag(request, "prefix")
    let fromKey = try flag(request, "from_key")
    guard !(prefix && fromKey) else { throw APIError.badRequest("give prefix or from_key, not both") }
    var watch = WatchRequest(
      range: prefix ? .prefix(key) : (fromKey ? KeyRange(key: key, rangeEnd: [0]) : KeyRange(key: key)))
    watch.startRevision = try number(request, "rev") ?? 0
    if let lastEventID = request.head.headers.first(name: "Last-Event-ID") {
      guard let last = Int64(lastEventID), last >= 0, last < Int64.max else {
        throw APIError.badRequest("Last-Event-ID must be a revision, got \"\(lastEventID)\"")
      }
      watch.startRevision = last + 1
    }
    watch.prevKV = try flag(request, "prev_kv")
    watch.progressNotify = try flag(request, "progress_notify")
    switch request.queryParameter("filter") {
    case nil: break
    case "noput": watch.filterPuts = true
    case "nodelete": watch.filterDeletes = true
    case let other?: throw APIError.badRequest("filter=\(other): use noput or nodelete")
    }
    let stream = WatchEventStream(service: service, eventLoop: eventLoop)
    return service.watch(watch, sink: stream, on: eventLoop).map { id in
      stream.watchStarted(id)
      return APIResponse(
        status: .ok,
        headers: [
          "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
          "X-Raftdb-Watch-Id": String(id),
        ],
        body: [], stream: stream)
    }
  }
}

/// One watch written as Server-Sent Events: each message of the watch is one SSE event, so that
/// the events of one revision always arrive together:
/// - `created`, data `{"watch_id", "revision"}`;
/// - `events`, data `{"revision", "events": [{"type": "PUT"|"DELETE", "kv", "prev_kv"?}]}`;
/// - `progress`, data `{"revision"}`;
/// - `canceled`, data `{"reason", "compact_revision", "resume_revision"}`, after which the stream
///   ends.
/// `events` and `progress` carry `id: <revision>`: every change up to it has been sent, so a client
/// that reconnects with `Last-Event-ID` (or `rev` one above it) misses nothing and repeats nothing.
/// A comment line every 30 s keeps proxies from closing a quiet stream and finds dead clients.
final class WatchEventStream: HTTPStreamingBody, WatchSink, @unchecked Sendable {
  // Unchecked: every mutable property is confined to `eventLoop`, the connection's loop (`deliver`
  // hops there; the other entry points are called on it).
  let service: KVService
  let eventLoop: any EventLoop
  private var output: HTTPStreamOutput?
  private var watchID: WatchID?
  /// Messages that arrived before the head was written.
  private var early: [WatchResponse] = []
  private var stopped = false
  private var heartbeat: RepeatedTask?
  static let heartbeatInterval = TimeAmount.seconds(30)

  init(service: KVService, eventLoop: any EventLoop) {
    self.service = service
    self.eventLoop = eventLoop
  }

  func watchStarted(_ id: WatchID) {
    eventLoop.preconditionInEventLoop()
    watchID = id
    if stopped { service.cancelWatch(id) }
  }

  // MARK: HTTPStreamingBody

  func start(_ output: HTTPStreamOutput) {
    self.output = output
    heartbeat = eventLoop.scheduleRepeatedTask(
      initialDelay: Self.heartbeatInterval, delay: Self.heartbeatInterval
    ) { [weak self] _ in
      self?.output?.write(Array(": heartbeat\n\n".utf8))
    }
    let waiting = early
    early = []
    write(waiting)
    if !output.isWritable { writabilityChanged(false) }
  }

  func writabilityChanged(_ writable: Bool) {
    if let watchID, !stopped { service.setWatchWritable(watchID, writable) }
  }

  func stop() {
    guard !stopped else { return }
    stopped = true
    heartbeat?.cancel()
    if let watchID { service.cancelWatch(watchID) }
  }

  // MARK: WatchSink

  func deliver(_ responses: [WatchResponse]) {
    eventLoop.execute { self.write(responses) }
  }

  private func write(_ responses: [WatchResponse]) {
    guard !stopped else { return }
    guard let output else {
      early += responses
      return
    }
    var bytes: [UInt8] = []
    var ended = false
    for response in responses {
      Self.encode(response, into: &bytes)
      ended = ended || response.isCancel
    }
    output.write(bytes)
    if ended {
      stop()
      output.finish()
    }
  }

  static func encode(_ response: WatchResponse, into bytes: inout [UInt8]) {
    var writer = JSONWriter()
    writer.beginObject()
    let name: String
    switch response.kind {
    case .created:
      name = "created"
      writer.field("watch_id", Int(response.watchID))
      writer.field("revision", Int(response.revision))
    case .events:
      name = "events"
      writer.field("revision", Int(response.revision))
      writer.key("events")
      writer.beginArray()
      for event in response.events {
        writer.beginObject()
        writer.field("type", event.type == .put ? "PUT" : "DELETE")
        writer.key("kv")
        HTTPAdapter.write(event.kv, to: &writer)
        if let previous = event.prevKV {
          writer.key("prev_kv")
          HTTPAdapter.write(previous, to: &writer)
        }
        writer.endObject()
      }
      writer.endArray()
    case .progress:
      name = "progress"
      writer.field("revision", Int(response.revision))
    case .canceled(let reason, let compactRevision, let resumeRevision):
      name = "canceled"
      writer.field("reason", reason)
      writer.field("compact_revision", Int(compactRevision))
      writer.field("resume_revision", Int(resumeRevision))
    }
    writer.endObject()
    switch response.kind {
    case .events, .progress: bytes += Array("id: \(response.revision)\n".utf8)
    case .created, .canceled: break
    }
    bytes += Array("event: \(name)\ndata: ".utf8)
    bytes += writer.bytes  // JSONWriter escapes newlines, so the data is one line.
    bytes += Array("\n\n".utf8)
  }
}
