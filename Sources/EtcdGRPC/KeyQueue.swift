import EtcdAPI
import Foundation
import GRPCCore
import KVStore
import KVWatch
import NIOCore
import RaftDBService

/// etcd's queue of keys under a prefix, the recipe under both v3lock and v3election: each
/// participant creates one key, `prefix` + its lease id in hex, under its lease; keys queue in
/// create-revision order; the oldest key holds the lock or leads. A waiter watches only the key
/// just before its own (no herd wakes when the holder goes), and a participant that dies is
/// dequeued by its lease's expiry.
///
/// Unlike etcd 3.4, a waiter whose own key went while it waited (its lease expired or was
/// revoked) is told so, rather than handed a lock it no longer holds in the store.
struct KeyQueue: Sendable {
  let member: MemberClient
  let prefix: Data
  let key: Data

  init(member: MemberClient, name: Data, lease: Int64) {
    self.member = member
    prefix = name + Data("/".utf8)
    key = prefix + Data(String(lease, radix: 16).utf8)
  }

  struct Joined: Sendable {
    /// The key's create revision: its place in the queue, and the holder's fencing token.
    var revision: Int64
    /// The key's value when it existed already (a participant asking again with the same lease).
    var existingValue: Data?
    /// The oldest key's create revision then (equal to `revision`: this key holds already).
    var firstRevision: Int64
    var header: Etcdserverpb_ResponseHeader
  }

  /// Creates the key under `lease` unless it exists (asking again with the same lease reuses the
  /// key and its place), and reads the head of the queue in the same transaction.
  func join(value: Data, lease: Int64, context: ServerContext) async throws -> Joined {
    var txn = Etcdserverpb_TxnRequest()
    txn.compare = [.createRevision(of: key, equals: 0)]
    var put = Etcdserverpb_PutRequest()
    put.key = key
    put.value = value
    put.lease = lease
    txn.success = [.init(put), .init(first())]
    txn.failure = [.init(.key(key)), .init(first())]
    let answer = try await member.kv.txn(txn, context: context)
    let ranges = answer.responses.map(\.responseRange)
    guard ranges.count == 2 else {
      throw MemberClient.unexpected("a queue join answered \(ranges.count) results")
    }
    var joined = Joined(
      revision: answer.header.revision, existingValue: nil,
      firstRevision: ranges[1].kvs.first?.createRevision ?? 0, header: answer.header)
    if !answer.succeeded {
      guard let existing = ranges[0].kvs.first else {
        throw MemberClient.unexpected("the queue key vanished")
      }
      joined.revision = existing.createRevision
      joined.existingValue = existing.value
    }
    return joined
  }

  /// etcd's Mutex.Lock and Election.Campaign: joins the queue under `lease` and waits for its turn;
  /// leaves the queue again when that fails or the call ends (the client went away, the server
  /// stops). `onJoined` runs in between (a campaign proclaims a changed value). Returns the joined
  /// key's place and the header of the read that found it at the head.
  ///
  /// A participant without a lease is refused: etcd grants one of its own that nobody keeps
  /// alive, so that the lock or leadership ends 60 s later whatever its holder does.
  func enter(
    value: Data, lease: Int64, calls: OpenStreams<ClosableCall>, context: ServerContext,
    onJoined: @escaping @Sendable (Joined) async throws -> Void = { _ in }
  ) async throws -> (Joined, Etcdserverpb_ResponseHeader) {
    guard lease != 0 else {
      throw RPCError(
        code: .invalidArgument,
        message: "etcdserver: a lock or campaign needs a lease: grant one, keep it alive and pass its id")
    }
    return try await calls.untilClosed(context) {
      let joined = try await join(value: value, lease: lease, context: context)
      do {
        try await onJoined(joined)
        return (joined, try await waitForTurn(joined, context: context))
      } catch {
        leaveAfterFailure(revision: joined.revision, context: context)
        throw error
      }
    }
  }

  /// Waits until every key older than the one created at `revision` is gone, then checks that this
  /// one is still there: it is then the oldest.
  func waitForTurn(_ joined: Joined, context: ServerContext) async throws -> Etcdserverpb_ResponseHeader {
    if joined.firstRevision == joined.revision { return joined.header }
    while true {
      var before = Etcdserverpb_RangeRequest.prefix(prefix)
      before.maxCreateRevision = joined.revision - 1
      before.sortTarget = .create
      before.sortOrder = .descend
      before.limit = 1
      let older = try await member.kv.range(before, context: context)
      guard let last = older.kvs.first else { break }
      try await member.waitForDelete(of: last.key, from: older.header.revision)
    }
    let mine = try await member.kv.range(.key(key), context: context)
    guard mine.kvs.first?.createRevision == joined.revision else {
      throw RPCError(
        code: .failedPrecondition,
        message:
          "etcdserver: the waiter's key \(String(decoding: key, as: UTF8.self)) was deleted while it waited (its lease expired or was revoked)"
      )
    }
    return mine.header
  }

  /// Deletes the key if it is still the generation created at `revision` (a waiter giving up,
  /// a holder resigning), so that no newer participant's key is ever touched.
  func leave(revision: Int64, context: ServerContext) async throws -> Etcdserverpb_TxnResponse {
    var txn = Etcdserverpb_TxnRequest()
    txn.compare = [.createRevision(of: key, equals: revision)]
    var delete = Etcdserverpb_DeleteRangeRequest()
    delete.key = key
    txn.success = [.init(delete)]
    return try await member.kv.txn(txn, context: context)
  }

  /// As `leave`, for a call that failed or was cancelled: in a task of its own, since the call's
  /// task may be cancelled already. Best effort: the lease's expiry dequeues the key otherwise.
  func leaveAfterFailure(revision: Int64, context: ServerContext) {
    Task { _ = try? await leave(revision: revision, context: context) }
  }

  /// The head of the queue: the oldest key under the prefix.
  func first() -> Etcdserverpb_RangeRequest {
    var request = Etcdserverpb_RangeRequest.prefix(prefix)
    request.sortTarget = .create
    request.sortOrder = .ascend
    request.limit = 1
    return request
  }
}

/// What the lock and election services call: the KV service (which forwards to the leader as for
/// any client), and watches on this member.
struct MemberClient: Sendable {
  let kv: EtcdKVService
  let service: KVService
  let eventLoop: any EventLoop

  static func unexpected(_ what: String) -> RPCError {
    RPCError(code: .internalError, message: "etcdserver: \(what)")
  }

  /// Returns once `key` is deleted at or after `revision` (etcd's waitDelete).
  func waitForDelete(of key: Data, from revision: Int64) async throws {
    let request = WatchRequest(range: KeyRange(key: [UInt8](key)), startRevision: revision, filterPuts: true)
    try await watch(request) { message in
      message.events.contains { $0.type == .delete } ? .stop : .next
    }
  }

  enum Next { case next, stop }

  /// Runs a watch on this member's store, handing each message with events to `body` until it
  /// says stop. Ends with an error when the watch is cancelled (compacted away, too slow), and
  /// when the calling task is cancelled.
  func watch(_ request: WatchRequest, _ body: (WatchResponse) async throws -> Next) async throws {
    let sink = LocalWatchSink()
    let id = try await etcdErrors { try await service.watch(request, sink: sink, on: eventLoop).get() }
    defer { service.cancelWatch(id) }
    for try await message in sink.messages {
      switch message.kind {
      case .events:
        if try await body(message) == .stop { return }
      case .canceled(let reason, let compactRevision, _):
        if compactRevision != 0 { throw MVCCError.compacted(compactRevision: compactRevision).rpcError }
        throw RPCError(code: .unavailable, message: "etcdserver: watch cancelled: \(reason)")
      case .created, .progress:
        continue
      }
    }
    try Task.checkCancellation()
    throw RPCError(code: .unavailable, message: "etcdserver: lost the watch")
  }
}

/// A watch's messages as an async sequence, for the services' own waits. Bounded: a reader that
/// falls `maxBuffered` messages behind loses the watch with an error (the client asks again).
final class LocalWatchSink: WatchSink {
  static let maxBuffered = 1024
  let messages: AsyncThrowingStream<WatchResponse, any Error>
  private let continuation: AsyncThrowingStream<WatchResponse, any Error>.Continuation

  init() {
    (messages, continuation) = AsyncThrowingStream.makeStream(
      of: WatchResponse.self, bufferingPolicy: .bufferingOldest(Self.maxBuffered))
  }

  func deliver(_ responses: [WatchResponse]) {
    for response in responses {
      if case .dropped = continuation.yield(response) {
        continuation.finish(
          throwing: RPCError(
            code: .unavailable, message: "etcdserver: the reader fell too far behind its watch"))
      }
    }
  }
}

extension Etcdserverpb_RangeRequest {
  static func key(_ key: Data) -> Self {
    var request = Self()
    request.key = key
    return request
  }

  static func prefix(_ prefix: Data) -> Self {
    let range = KeyRange.prefix([UInt8](prefix))
    var request = Self()
    request.key = Data(range.key)
    request.rangeEnd = Data(range.rangeEnd)
    return request
  }
}

extension Etcdserverpb_Compare {
  static func createRevision(of key: Data, equals revision: Int64) -> Self {
    var compare = Self()
    compare.key = key
    compare.target = .create
    compare.result = .equal
    compare.createRevision = revision
    return compare
  }
}

extension Etcdserverpb_RequestOp {
  init(_ range: Etcdserverpb_RangeRequest) {
    self.init()
    request = .requestRange(range)
  }

  init(_ put: Etcdserverpb_PutRequest) {
    self.init()
    request = .requestPut(put)
  }

  init(_ delete: Etcdserverpb_DeleteRangeRequest) {
    self.init()
    request = .requestDeleteRange(delete)
  }
}
