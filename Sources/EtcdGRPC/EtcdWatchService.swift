import EtcdAPI
import Foundation
import GRPCCore
import KVStore
import KVWatch
import NIOCore
import RaftDBService
import Synchronization

/// etcd's Watch service: one bidirectional stream carries any number of watches, each served by
/// this member's watch hub from its own applied history (as etcd serves watches from the member
/// the client is connected to).
///
/// - create: etcd's fields (key and range end, start revision, NOPUT/NODELETE filters, prev_kv,
///   progress_notify, fragment) and client-chosen watch ids; id 0 asks for the next free one, from
///   0 up, as etcd numbers them. A refused create is answered `created` and `canceled` together
///   with the reason, as etcd does.
/// - cancel: answered `canceled`; an unknown id too (etcd answers it the same way).
/// - progress: every watch on the stream gets a progress notification (no events, header
///   revision up to which it has had every change). etcd 3.4 sends one with watch id -1 instead;
///   clientv3 takes either.
///
/// Backpressure: messages wait in the stream's outbound queue until the gRPC writer has sent them.
/// Past `pauseBytes` waiting, the stream's watches are marked unwritable, so the hub holds their
/// messages (within its own bounds, beyond which it cancels the watch with the revision to resume
/// from) until the queue drains below `resumeBytes`. A client that stops reading yet keeps sending
/// requests is cut off at `maxQueuedBytes` with ResourceExhausted.
public struct EtcdWatchService: Etcdserverpb_Watch.SimpleServiceProtocol {
  let service: KVService
  let eventLoop: any EventLoop
  let limits: EtcdGRPCServer.Limits
  let streams = OpenStreams<WatchStream>()

  static let pauseBytes = 4 << 20
  static let resumeBytes = 1 << 20
  static let maxQueuedBytes = 64 << 20

  public init(service: KVService, eventLoop: any EventLoop, limits: EtcdGRPCServer.Limits) {
    self.service = service
    self.eventLoop = eventLoop
    self.limits = limits
  }

  public func watch(
    request: RPCAsyncSequence<Etcdserverpb_WatchRequest, any Error>,
    response: RPCWriter<Etcdserverpb_WatchResponse>, context: ServerContext
  ) async throws {
    let (outbound, continuation) = AsyncStream.makeStream(of: WatchStream.Queued.self)
    let stream = WatchStream(
      service: service, continuation: continuation, maxMessageBytes: limits.maxRequestBytes)
    guard streams.add(stream) else {
      throw RPCError(code: .unavailable, message: "etcdserver: server stopped")
    }
    defer {
      stream.close()
      streams.remove(stream)
    }
    enum Side { case writer, reader }
    try await withThrowingTaskGroup(of: Side.self) { group in
      group.addTask {
        for await queued in outbound {
          try await response.write(queued.message)
          stream.sent(queued.bytes)
        }
        return .writer
      }
      group.addTask { [eventLoop] in
        for try await message in request {
          guard !stream.isOverflowing else {
            throw RPCError(
              code: .resourceExhausted,
              message: "etcdserver: watch stream closed: the client reads its responses too slowly")
          }
          switch message.requestUnion {
          case .createRequest(let create): await stream.create(create, on: eventLoop)
          case .cancelRequest(let cancel): stream.cancel(cancel.watchID)
          case .progressRequest: stream.requestProgress()
          case nil: continue
          }
        }
        // The client closed its side: etcd ends the stream then, once the answers are sent.
        stream.close()
        return .reader
      }
      switch try await group.next() {
      case .reader?: try await group.waitForAll()
      // The stream was closed here (the server stops): stop reading the client's requests.
      default: group.cancelAll()
      }
    }
  }
}

/// The watches of one gRPC stream and its queue of responses.
final class WatchStream: ClosableStream {
  struct Queued: Sendable {
    var message: Etcdserverpb_WatchResponse
    var bytes: Int
  }

  private struct State {
    /// Client watch id to the hub's.
    var watches: [Int64: WatchID] = [:]
    var nextAutoID: Int64 = 0
    var queuedBytes = 0
    var paused = false
    var closed = false
  }

  let service: KVService
  let maxMessageBytes: Int
  private let continuation: AsyncStream<Queued>.Continuation
  private let state = Mutex(State())

  init(service: KVService, continuation: AsyncStream<Queued>.Continuation, maxMessageBytes: Int) {
    self.service = service
    self.continuation = continuation
    self.maxMessageBytes = maxMessageBytes
  }

  var isOverflowing: Bool { state.withLock { $0.queuedBytes > EtcdWatchService.maxQueuedBytes } }

  func header(revision: Int64) -> Etcdserverpb_ResponseHeader { service.etcdHeader(revision: revision) }

  // MARK: Requests (on the stream's task, one at a time)

  func create(_ request: Etcdserverpb_WatchCreateRequest, on eventLoop: any EventLoop) async {
    let chosen: Int64? = state.withLock { state in
      if request.watchID != 0 {
        guard request.watchID > 0, state.watches[request.watchID] == nil else { return nil }
        return request.watchID
      }
      while state.watches[state.nextAutoID] != nil { state.nextAutoID += 1 }
      defer { state.nextAutoID += 1 }
      return state.nextAutoID
    }
    guard let clientID = chosen else {
      refuse(watchID: -1, reason: "mvcc: duplicate watch ID provided on the WatchStream")
      return
    }
    let watch = WatchRequest(
      range: KeyRange(key: request.key, rangeEnd: request.rangeEnd), startRevision: request.startRevision,
      prevKV: request.prevKv, filterPuts: request.filters.contains(.noput),
      filterDeletes: request.filters.contains(.nodelete), progressNotify: request.progressNotify)
    if let unknown = request.filters.first(where: { $0 != .noput && $0 != .nodelete }) {
      refuse(watchID: clientID, reason: "etcdserver: unknown watch filter \(unknown.rawValue)")
      return
    }
    // Hold the id while the hub creates the watch, so that a second create cannot take it.
    state.withLock { $0.watches[clientID] = -1 }
    let sink = GRPCWatchSink(stream: self, clientID: clientID, fragment: request.fragment)
    do {
      let hubID = try await service.watch(watch, sink: sink, on: eventLoop).get()
      let (keep, paused) = state.withLock { state -> (Bool, Bool) in
        guard !state.closed, state.watches[clientID] == -1 else { return (false, false) }
        state.watches[clientID] = hubID
        return (true, state.paused)
      }
      if !keep {
        service.cancelWatch(hubID)
      } else if paused {
        service.setWatchWritable(hubID, false)
      }
    } catch {
      state.withLock { _ = $0.watches.removeValue(forKey: clientID) }
      let reason =
        switch error {
        case let error as ServiceError: error.rpcError.message
        default: "\(error)"
        }
      refuse(watchID: clientID, reason: reason)
    }
  }

  func cancel(_ clientID: Int64) {
    let hubID = state.withLock { $0.watches.removeValue(forKey: clientID) }
    if let hubID, hubID >= 0 { service.cancelWatch(hubID) }
    var answer = Etcdserverpb_WatchResponse()
    answer.header = header(revision: service.currentRevision())
    answer.watchID = clientID
    answer.canceled = true
    enqueue(answer, bytes: 64)
  }

  func requestProgress() {
    for hubID in state.withLock({ Array($0.watches.values) }) where hubID >= 0 {
      service.requestWatchProgress(hubID)
    }
  }

  private func refuse(watchID: Int64, reason: String) {
    var answer = Etcdserverpb_WatchResponse()
    answer.header = header(revision: service.currentRevision())
    answer.watchID = watchID
    answer.created = true
    answer.canceled = true
    answer.cancelReason = reason
    enqueue(answer, bytes: 64 + reason.utf8.count)
  }

  /// Ends every watch of the stream (the client went away, or the stream ends).
  func close() {
    let hubIDs = state.withLock { state -> [WatchID] in
      guard !state.closed else { return [] }
      state.closed = true
      defer { state.watches = [:] }
      return Array(state.watches.values)
    }
    for hubID in hubIDs where hubID >= 0 { service.cancelWatch(hubID) }
    continuation.finish()
  }

  // MARK: Responses

  /// A watch the hub ended (too slow, or compacted past): it is no longer the stream's.
  func hubEnded(_ clientID: Int64) {
    state.withLock { _ = $0.watches.removeValue(forKey: clientID) }
  }

  func enqueue(_ message: Etcdserverpb_WatchResponse, bytes: Int) {
    let pause = state.withLock { state -> [WatchID] in
      guard !state.closed else { return [] }
      state.queuedBytes += bytes
      guard !state.paused, state.queuedBytes > EtcdWatchService.pauseBytes else { return [] }
      state.paused = true
      return Array(state.watches.values)
    }
    for hubID in pause where hubID >= 0 { service.setWatchWritable(hubID, false) }
    continuation.yield(Queued(message: message, bytes: bytes))
  }

  func sent(_ bytes: Int) {
    let resume = state.withLock { state -> [WatchID] in
      state.queuedBytes -= bytes
      guard state.paused, state.queuedBytes < EtcdWatchService.resumeBytes, !state.closed else { return [] }
      state.paused = false
      return Array(state.watches.values)
    }
    for hubID in resume where hubID >= 0 { service.setWatchWritable(hubID, true) }
  }
}

/// Turns one watch's hub messages into etcd's responses on its stream.
final class GRPCWatchSink: WatchSink {
  let stream: WatchStream
  let clientID: Int64
  let fragment: Bool

  init(stream: WatchStream, clientID: Int64, fragment: Bool) {
    self.stream = stream
    self.clientID = clientID
    self.fragment = fragment
  }

  func deliver(_ responses: [WatchResponse]) {
    for response in responses {
      var answer = Etcdserverpb_WatchResponse()
      answer.header = stream.header(revision: response.revision)
      answer.watchID = clientID
      switch response.kind {
      case .created: answer.created = true
      case .progress: break
      case .canceled(let reason, let compactRevision, _):
        answer.canceled = true
        answer.compactRevision = compactRevision
        answer.cancelReason =
          compactRevision != 0 ? "etcdserver: mvcc: required revision has been compacted" : reason
        stream.hubEnded(clientID)
      case .events:
        send(events: response.events, template: answer)
        continue
      }
      stream.enqueue(answer, bytes: 64 + answer.cancelReason.utf8.count)
    }
  }

  /// The events of one revision in one response, or, for a watch that asked for `fragment`, in as
  /// many as keep each under the request limit (all but the last marked `fragment`), as etcd splits
  /// them.
  private func send(events: [WatchEvent], template: Etcdserverpb_WatchResponse) {
    var chunk: [Mvccpb_Event] = []
    var chunkBytes = 0
    for event in events {
      let converted = Mvccpb_Event(event)
      let bytes =
        32 + event.kv.key.count + event.kv.value.count
        + (event.prevKV.map { 32 + $0.key.count + $0.value.count } ?? 0)
      if fragment, !chunk.isEmpty, chunkBytes + bytes > stream.maxMessageBytes {
        var part = template
        part.events = chunk
        part.fragment = true
        stream.enqueue(part, bytes: 64 + chunkBytes)
        chunk = []
        chunkBytes = 0
      }
      chunk.append(converted)
      chunkBytes += bytes
    }
    var last = template
    last.events = chunk
    stream.enqueue(last, bytes: 64 + chunkBytes)
  }
}

extension Mvccpb_Event {
  init(_ event: WatchEvent) {
    self.init()
    type = event.type == .put ? .put : .delete
    kv = Mvccpb_KeyValue(event.kv)
    if let previous = event.prevKV { prevKv = Mvccpb_KeyValue(previous) }
  }
}
