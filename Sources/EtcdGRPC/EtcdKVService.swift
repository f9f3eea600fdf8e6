import EtcdAPI
import GRPCCore
import GRPCNIOTransportHTTP2
import KVStore
import NIOCore
import RaftDBAPI
import RaftDBService

/// etcd's KV service over the member's `KVService`. A Put and a DeleteRange are transactions of one
/// operation, as etcd applies them, so each takes one revision and gives the same answers as in a
/// txn. A linearizable Range is a ReadIndex read on the leader (`consistent`); a serializable one
/// reads this member's last applied state (`stale`), as etcd's does.
public struct EtcdKVService: Etcdserverpb_KV.SimpleServiceProtocol {
  let service: KVService
  let eventLoop: any EventLoop
  /// etcd's `--max-request-bytes`, measured on the keys and values a write carries.
  let maxRequestBytes: Int
  let forwarder: LeaderForwarder

  init(service: KVService, eventLoop: any EventLoop, maxRequestBytes: Int, forwarder: LeaderForwarder) {
    self.service = service
    self.eventLoop = eventLoop
    self.maxRequestBytes = maxRequestBytes
    self.forwarder = forwarder
  }

  // MARK: The calls as they arrive: served here, or forwarded to the leader (see LeaderForwarder)

  private func served<Request: Sendable, Response: Sendable>(
    _ request: ServerRequest<Request>, here: (Request) async throws -> Response,
    there:
      @escaping @Sendable (Etcdserverpb_KV.Client<HTTP2ClientTransport.Posix>, ClientRequest<Request>)
      async throws -> Response
  ) async throws -> ServerResponse<Response> {
    try await forwarder.served(request, here: here) {
      try await there(Etcdserverpb_KV.Client(wrapping: $0), $1)
    }
  }

  public func range(request: ServerRequest<Etcdserverpb_RangeRequest>, context: ServerContext) async throws
    -> ServerResponse<Etcdserverpb_RangeResponse>
  {
    try await served(request, here: { try await range(request: $0, context: context) }) {
      try await $0.range(request: $1)
    }
  }

  public func put(request: ServerRequest<Etcdserverpb_PutRequest>, context: ServerContext) async throws
    -> ServerResponse<Etcdserverpb_PutResponse>
  {
    try await served(request, here: { try await put(request: $0, context: context) }) {
      try await $0.put(request: $1)
    }
  }

  public func deleteRange(request: ServerRequest<Etcdserverpb_DeleteRangeRequest>, context: ServerContext)
    async throws -> ServerResponse<Etcdserverpb_DeleteRangeResponse>
  {
    try await served(request, here: { try await deleteRange(request: $0, context: context) }) {
      try await $0.deleteRange(request: $1)
    }
  }

  public func txn(request: ServerRequest<Etcdserverpb_TxnRequest>, context: ServerContext) async throws
    -> ServerResponse<Etcdserverpb_TxnResponse>
  {
    try await served(request, here: { try await txn(request: $0, context: context) }) {
      try await $0.txn(request: $1)
    }
  }

  public func compact(request: ServerRequest<Etcdserverpb_CompactionRequest>, context: ServerContext)
    async throws -> ServerResponse<Etcdserverpb_CompactionResponse>
  {
    try await served(request, here: { try await compact(request: $0, context: context) }) {
      try await $0.compact(request: $1)
    }
  }

  // MARK: Calls the server makes itself (the lock and election services, as etcd's v3client)

  /// A txn served here or by the leader, exactly as a client's would be.
  func txn(_ request: Etcdserverpb_TxnRequest, context: ServerContext) async throws
    -> Etcdserverpb_TxnResponse
  {
    try await txn(request: ServerRequest(metadata: [:], message: request), context: context).message
  }

  /// A range served here (serializable) or by the leader (linearizable, on a follower).
  func range(_ request: Etcdserverpb_RangeRequest, context: ServerContext) async throws
    -> Etcdserverpb_RangeResponse
  {
    try await range(request: ServerRequest(metadata: [:], message: request), context: context).message
  }

  // MARK: The calls served here

  func header(revision: Int64? = nil) -> Etcdserverpb_ResponseHeader {
    service.etcdHeader(revision: revision)
  }

  public func range(request: Etcdserverpb_RangeRequest, context: ServerContext) async throws
    -> Etcdserverpb_RangeResponse
  {
    let range = try RangeRequest(request)
    if range.range.key.isEmpty { throw MVCCError.emptyKey.rpcError }
    let level: ReadLevel = request.serializable ? .stale : .consistent
    return try await etcdErrors {
      let result = try await service.range(range, level: level, on: eventLoop).get()
      return Etcdserverpb_RangeResponse(result.response, header: header(revision: result.revision))
    }
  }

  public func put(request: Etcdserverpb_PutRequest, context: ServerContext) async throws
    -> Etcdserverpb_PutResponse
  {
    let result = try await transact(TxnRequest(success: [.put(PutRequest(request))]))
    var answer = Etcdserverpb_PutResponse()
    answer.header = header(revision: Int64(result.revision))
    if case .put(let put)? = result.response.responses.first, let previous = put.prevKV {
      answer.prevKv = Mvccpb_KeyValue(previous)
    }
    return answer
  }

  public func deleteRange(request: Etcdserverpb_DeleteRangeRequest, context: ServerContext) async throws
    -> Etcdserverpb_DeleteRangeResponse
  {
    let result = try await transact(TxnRequest(success: [.deleteRange(DeleteRangeRequest(request))]))
    var answer = Etcdserverpb_DeleteRangeResponse()
    answer.header = header(revision: Int64(result.revision))
    if case .deleteRange(let delete)? = result.response.responses.first {
      answer.deleted = delete.deleted
      answer.prevKvs = delete.prevKVs.map(Mvccpb_KeyValue.init)
    }
    return answer
  }

  public func txn(request: Etcdserverpb_TxnRequest, context: ServerContext) async throws
    -> Etcdserverpb_TxnResponse
  {
    let result = try await transact(try TxnRequest(request))
    return Etcdserverpb_TxnResponse(result.response, header: header(revision: Int64(result.revision)))
  }

  public func compact(request: Etcdserverpb_CompactionRequest, context: ServerContext) async throws
    -> Etcdserverpb_CompactionResponse
  {
    // `physical` asks etcd to wait until the compaction is on disk; here a compaction has applied
    // when it is acknowledged (the store is in memory, its log entry durable), so both are the same.
    try await etcdErrors {
      let revision = try await service.compact(revision: request.revision, on: eventLoop).get()
      var answer = Etcdserverpb_CompactionResponse()
      answer.header = header(revision: Int64(revision))
      return answer
    }
  }

  private func transact(_ request: TxnRequest) async throws -> TxnResult {
    // The store refuses an empty key too, but only once proposed; etcd refuses it first.
    try Self.requireKeys(request)
    // etcd measures the request it proposes; its keys and values are nearly all of it, and adding
    // them up costs nothing next to encoding the message again to count its bytes.
    if Self.payloadBytes(request) > maxRequestBytes {
      throw RPCError(code: .invalidArgument, message: "etcdserver: request is too large")
    }
    return try await etcdErrors { try await service.txn(request, on: eventLoop).get() }
  }

  /// The bytes of keys, values and range ends in `request`, nested transactions included.
  static func payloadBytes(_ request: TxnRequest) -> Int {
    var total = 0
    for compare in request.compare {
      total += compare.range.key.count + compare.range.rangeEnd.count
      if case .value(let value) = compare.target { total += value.count }
    }
    for operation in request.success + request.failure {
      switch operation {
      case .put(let put): total += put.key.count + put.value.count
      case .deleteRange(let delete): total += delete.range.key.count + delete.range.rangeEnd.count
      case .range(let range): total += range.range.key.count + range.range.rangeEnd.count
      case .txn(let nested): total += payloadBytes(nested)
      }
    }
    return total
  }

  /// etcd's `checkPutRequest` / `checkDeleteRequest` / range checks: every key is given.
  static func requireKeys(_ request: TxnRequest) throws {
    for operation in request.success + request.failure {
      switch operation {
      case .put(let put): if put.key.isEmpty { throw MVCCError.emptyKey.rpcError }
      case .deleteRange(let delete): if delete.range.key.isEmpty { throw MVCCError.emptyKey.rpcError }
      case .range(let range): if range.range.key.isEmpty { throw MVCCError.emptyKey.rpcError }
      case .txn(let nested): try requireKeys(nested)
      }
    }
  }
}
