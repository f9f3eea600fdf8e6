import EtcdAPI
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import RaftDBService

/// etcd's Cluster service over raftdb's membership: MemberList (with peer and client URLs),
/// MemberRemove and MemberPromote, which a follower forwards to the leader. MemberAdd and
/// MemberUpdate answer Unimplemented, saying what to do instead: a raftdb member adds itself
/// (`-join`, which adds it as a learner and promotes it once it has caught up), and keeps the
/// addresses it joined with.
public struct EtcdClusterService: Etcdserverpb_Cluster.SimpleServiceProtocol {
  let service: KVService
  let eventLoop: any EventLoop
  let forwarder: LeaderForwarder

  static let memberNotFound = RPCError(code: .notFound, message: "etcdserver: member not found")
  static let notLearner = RPCError(
    code: .failedPrecondition, message: "etcdserver: can only promote a learner member")

  private func served<Request: Sendable, Response: Sendable>(
    _ request: ServerRequest<Request>, here: (Request) async throws -> Response,
    there:
      @escaping @Sendable (Etcdserverpb_Cluster.Client<HTTP2ClientTransport.Posix>, ClientRequest<Request>)
      async throws -> Response
  ) async throws -> ServerResponse<Response> {
    try await forwarder.served(request, here: here) {
      try await there(Etcdserverpb_Cluster.Client(wrapping: $0), $1)
    }
  }

  public func memberList(request: Etcdserverpb_MemberListRequest, context: ServerContext) async throws
    -> Etcdserverpb_MemberListResponse
  {
    try await etcdErrors {
      var answer = Etcdserverpb_MemberListResponse()
      answer.members = try await members()
      answer.header = service.etcdHeader()
      return answer
    }
  }

  private func members() async throws -> [Etcdserverpb_Member] {
    let status = try await service.status(on: eventLoop).get()
    return status.members.map { member in
      var converted = Etcdserverpb_Member()
      converted.id = member.id.rawValue
      converted.name = member.info.name
      converted.peerUrls = ["http://\(member.info.raftAddress)"]
      converted.clientUrls = member.info.httpAddress.isEmpty ? [] : ["http://\(member.info.httpAddress)"]
      converted.isLearner = !member.voter
      return converted
    }
  }

  public func memberRemove(request: ServerRequest<Etcdserverpb_MemberRemoveRequest>, context: ServerContext)
    async throws -> ServerResponse<Etcdserverpb_MemberRemoveResponse>
  {
    try await served(request, here: { try await memberRemove(request: $0, context: context) }) {
      try await $0.memberRemove(request: $1)
    }
  }

  public func memberRemove(request: Etcdserverpb_MemberRemoveRequest, context: ServerContext) async throws
    -> Etcdserverpb_MemberRemoveResponse
  {
    try await etcdErrors {
      do {
        try await service.remove(name: String(request.id, radix: 16))
      } catch ServiceError.notFound {
        throw Self.memberNotFound
      }
      var answer = Etcdserverpb_MemberRemoveResponse()
      answer.members = try await members()
      answer.header = service.etcdHeader()
      return answer
    }
  }

  public func memberPromote(request: ServerRequest<Etcdserverpb_MemberPromoteRequest>, context: ServerContext)
    async throws -> ServerResponse<Etcdserverpb_MemberPromoteResponse>
  {
    try await served(request, here: { try await memberPromote(request: $0, context: context) }) {
      try await $0.memberPromote(request: $1)
    }
  }

  /// Promotes a learner once it has caught up with the leader's log. etcd refuses at once a
  /// learner that is behind; raftdb waits for it to catch up (as a join does), up to the join's
  /// bound, and then answers etcd's `learner not ready` if it still has not.
  public func memberPromote(request: Etcdserverpb_MemberPromoteRequest, context: ServerContext) async throws
    -> Etcdserverpb_MemberPromoteResponse
  {
    try await etcdErrors {
      let status = try await service.status(on: eventLoop).get()
      guard let member = status.members.first(where: { $0.id.rawValue == request.id }) else {
        throw Self.memberNotFound
      }
      guard !member.voter else { throw Self.notLearner }
      do {
        _ = try await service.join(
          name: member.info.name, raftAddress: member.info.raftAddress, httpAddress: member.info.httpAddress,
          memberID: member.id, asVoter: true)
      } catch ServiceError.unavailable(let why) where why.contains("catching up") {
        throw RPCError(
          code: .failedPrecondition,
          message: "etcdserver: can only promote a learner member which is in sync with leader")
      }
      var answer = Etcdserverpb_MemberPromoteResponse()
      answer.members = try await members()
      answer.header = service.etcdHeader()
      return answer
    }
  }

  public func memberAdd(request: Etcdserverpb_MemberAddRequest, context: ServerContext) async throws
    -> Etcdserverpb_MemberAddResponse
  {
    throw RPCError(
      code: .unimplemented,
      message:
        "raftdb members add themselves: start the new node with -join <a member's client address> (and -learner to stay a learner); it joins as a learner and is promoted once it has caught up"
    )
  }

  public func memberUpdate(request: Etcdserverpb_MemberUpdateRequest, context: ServerContext) async throws
    -> Etcdserverpb_MemberUpdateResponse
  {
    throw RPCError(
      code: .unimplemented,
      message:
        "raftdb members keep the addresses they joined with: remove the member, wipe its data directory and join it again with the new addresses"
    )
  }
}
