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
  /// Set when the server stops: open keep-alive streams end then rather than hold the shutdown up.
  let stopping = ServerStopping()
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
    Etcdserverpb_ResponseHeader(service.memberHeader(), revision: revision ?? service.currentRevision())
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

  /// One answer per request, in order. A lease that does not exist (any more) is answered with TTL
  /// 0, as etcd does, which clients take for "expired"; any other error ends the stream.
  public func leaseKeepAlive(
    request: RPCAsyncSequence<Etcdserverpb_LeaseKeepAliveRequest, any Error>,
    response: RPCWriter<Etcdserverpb_LeaseKeepAliveResponse>, context: ServerContext
  ) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask { try await renew(request, response) }
      // A client keeps its keep-alive stream open for as long as it holds the lease; look twice a
      // second whether the server is stopping (a sleep is cancelled at once when the stream ends).
      group.addTask { [stopping] in
        while !stopping.isStopping { try await Task.sleep(for: .milliseconds(500)) }
      }
      try await group.next()
      group.cancelAll()
    }
  }

  /// Ends the open keep-alive streams (the server stops).
  func stop() { stopping.stop() }

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

extension Etcdserverpb_ResponseHeader {
  init(_ member: MemberHeader, revision: Int64) {
    self.init()
    clusterID = member.clusterID
    memberID = member.memberID
    raftTerm = member.raftTerm
    self.revision = revision
  }
}

/// Whether the server is stopping, for the handlers of long-lived streams.
final class ServerStopping: Sendable {
  private let flag = Atomic<Bool>(false)
  var isStopping: Bool { flag.load(ordering: .relaxed) }
  func stop() { flag.store(true, ordering: .relaxed) }
}
