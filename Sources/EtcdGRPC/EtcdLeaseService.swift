import EtcdAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import KVStore
import NIOCore
import RaftDBService
import Synchronization

/// etcd's Lease service over the member's leases. Grants and revokes go through the log; renewals
/// and TTL queries are answered by the leader, which alone runs the lease clocks (as in etcd).
public struct EtcdLeaseService: Etcdserverpb_Lease.SimpleServiceProtocol {
  let service: KVService
  let eventLoop: any EventLoop
  /// The open keep-alive streams, which a stopping server ends rather than wait for.
  let calls = OpenStreams<ClosableCall>()
  let forwarder: LeaderForwarder

  init(service: KVService, eventLoop: any EventLoop, forwarder: LeaderForwarder) {
    self.service = service
    self.eventLoop = eventLoop
    self.forwarder = forwarder
  }

  // MARK: Grants, revokes and TTL queries on a follower go to the leader (see LeaderForwarder)

  private func served<Request: Sendable, Response: Sendable>(
    _ request: ServerRequest<Request>, here: (Request) async throws -> Response,
    there:
      @escaping @Sendable (Etcdserverpb_Lease.Client<HTTP2ClientTransport.Posix>, ClientRequest<Request>)
      async throws -> Response
  ) async throws -> ServerResponse<Response> {
    try await forwarder.served(request, here: here) {
      try await there(Etcdserverpb_Lease.Client(wrapping: $0), $1)
    }
  }

  public func leaseGrant(request: ServerRequest<Etcdserverpb_LeaseGrantRequest>, context: ServerContext)
    async throws -> ServerResponse<Etcdserverpb_LeaseGrantResponse>
  {
    try await served(request, here: { try await leaseGrant(request: $0, context: context) }) {
      try await $0.leaseGrant(request: $1)
    }
  }

  public func leaseRevoke(request: ServerRequest<Etcdserverpb_LeaseRevokeRequest>, context: ServerContext)
    async throws -> ServerResponse<Etcdserverpb_LeaseRevokeResponse>
  {
    try await served(request, here: { try await leaseRevoke(request: $0, context: context) }) {
      try await $0.leaseRevoke(request: $1)
    }
  }

  public func leaseTimeToLive(
    request: ServerRequest<Etcdserverpb_LeaseTimeToLiveRequest>, context: ServerContext
  ) async throws -> ServerResponse<Etcdserverpb_LeaseTimeToLiveResponse> {
    try await served(request, here: { try await leaseTimeToLive(request: $0, context: context) }) {
      try await $0.leaseTimeToLive(request: $1)
    }
  }

  // MARK: The calls served here

  func header(revision: Int64? = nil) -> Etcdserverpb_ResponseHeader {
    service.etcdHeader(revision: revision)
  }

  public func leaseGrant(request: Etcdserverpb_LeaseGrantRequest, context: ServerContext) async throws
    -> Etcdserverpb_LeaseGrantResponse
  {
    try await etcdErrors {
      let grant = try await service.grantLease(ttl: request.ttl, id: request.id, on: eventLoop).get()
      var answer = Etcdserverpb_LeaseGrantResponse()
      answer.header = header(revision: Int64(grant.revision))
      answer.id = grant.id
      answer.ttl = grant.ttl
      return answer
    }
  }

  public func leaseRevoke(request: Etcdserverpb_LeaseRevokeRequest, context: ServerContext) async throws
    -> Etcdserverpb_LeaseRevokeResponse
  {
    try await etcdErrors {
      let revoked = try await service.revokeLease(id: request.id, on: eventLoop).get()
      var answer = Etcdserverpb_LeaseRevokeResponse()
      answer.header = header(revision: Int64(revoked.revision))
      return answer
    }
  }

  /// A follower passes the whole stream on to the leader, which alone renews leases (a leader
  /// change mid-stream ends it with `not leader`, and the client opens another).
  public func leaseKeepAlive(
    request: StreamingServerRequest<Etcdserverpb_LeaseKeepAliveRequest>, context: ServerContext
  ) async throws -> StreamingServerResponse<Etcdserverpb_LeaseKeepAliveResponse> {
    let leader = try await leaderToForwardTo(request.metadata)
    return StreamingServerResponse(metadata: [:]) { writer in
      if let leader {
        try await calls.untilClosed(context) {
          try await forwardKeepAlives(request.messages, writer, to: leader)
        }
      } else {
        try await leaseKeepAlive(request: request.messages, response: writer, context: context)
      }
      return [:]
    }
  }

  /// The leader's client address, when this member is a follower that knows it and the stream was
  /// not forwarded here already (nil: serve it here).
  private func leaderToForwardTo(_ metadata: Metadata) async throws -> String? {
    guard !LeaderForwarder.isForwarded(metadata) else { return nil }
    let status = try await etcdErrors { try await service.status(on: eventLoop).get() }
    guard let leader = status.leader, leader.name != status.name, !leader.httpAddress.isEmpty else {
      return nil
    }
    return leader.httpAddress
  }

  private func forwardKeepAlives(
    _ requests: RPCAsyncSequence<Etcdserverpb_LeaseKeepAliveRequest, any Error>,
    _ response: RPCWriter<Etcdserverpb_LeaseKeepAliveResponse>, to leader: String
  ) async throws {
    let client = Etcdserverpb_Lease.Client(wrapping: try forwarder.client(for: leader))
    try await client.leaseKeepAlive(
      metadata: LeaderForwarder.forwardedMetadata,
      requestProducer: { writer in
        for try await renewal in requests { try await writer.write(renewal) }
      }
    ) { answers in
      for try await answer in answers.messages { try await response.write(answer) }
    }
  }

  /// One answer per request, in order. A lease that does not exist (any more) is answered with TTL
  /// 0, as etcd does, which clients take for "expired"; any other error ends the stream.
  public func leaseKeepAlive(
    request: RPCAsyncSequence<Etcdserverpb_LeaseKeepAliveRequest, any Error>,
    response: RPCWriter<Etcdserverpb_LeaseKeepAliveResponse>, context: ServerContext
  ) async throws {
    // A client keeps its keep-alive stream open for as long as it holds the lease; a stopping
    // server ends it.
    try await calls.untilClosed(context) { try await renew(request, response) }
  }

  /// Ends the open keep-alive streams (the server stops).
  func stop() { calls.closeAll() }

  private func renew(
    _ request: RPCAsyncSequence<Etcdserverpb_LeaseKeepAliveRequest, any Error>,
    _ response: RPCWriter<Etcdserverpb_LeaseKeepAliveResponse>
  ) async throws {
    for try await renewal in request {
      var answer = Etcdserverpb_LeaseKeepAliveResponse()
      answer.id = renewal.id
      do {
        answer.ttl = try await service.keepAlive(lease: renewal.id, on: eventLoop).get()
      } catch ServiceError.store(.leaseNotFound) {
        answer.ttl = 0
      } catch let error as ServiceError {
        throw error.rpcError
      }
      answer.header = header()
      try await response.write(answer)
    }
  }

  /// etcd answers an unknown lease with TTL -1 rather than an error.
  public func leaseTimeToLive(request: Etcdserverpb_LeaseTimeToLiveRequest, context: ServerContext)
    async throws -> Etcdserverpb_LeaseTimeToLiveResponse
  {
    var answer = Etcdserverpb_LeaseTimeToLiveResponse()
    answer.id = request.id
    do {
      let status = try await service.timeToLive(lease: request.id, on: eventLoop).get()
      answer.ttl = status.remainingTTL
      answer.grantedTtl = status.grantedTTL
      if request.keys { answer.keys = status.keys.map { Data($0) } }
    } catch ServiceError.store(.leaseNotFound) {
      answer.ttl = -1
    } catch let error as ServiceError {
      throw error.rpcError
    }
    answer.header = header()
    return answer
  }

  public func leaseLeases(request: Etcdserverpb_LeaseLeasesRequest, context: ServerContext) async throws
    -> Etcdserverpb_LeaseLeasesResponse
  {
    var answer = Etcdserverpb_LeaseLeasesResponse()
    answer.leases = service.leases().map { id in
      var lease = Etcdserverpb_LeaseStatus()
      lease.id = id
      return lease
    }
    answer.header = header()
    return answer
  }
}
