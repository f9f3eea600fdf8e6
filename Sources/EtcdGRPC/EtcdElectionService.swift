import EtcdAPI
import Foundation
import GRPCCore
import KVStore
import KVWatch

/// etcd's v3election service, on the same queue of keys as the lock (`KeyQueue`): a candidate's
/// key holds its proposal, and the oldest key leads. Proclaim and Resign act only while the
/// leader's key is the generation it was elected with (compare its create revision), so a leader
/// whose lease expired cannot overwrite its successor.
///
/// Errors are etcd's: its election server returns `election: not leader` and `election: no leader`
/// with gRPC's code Unknown, and clients match the text.
public struct EtcdElectionService: V3electionpb_Election.SimpleServiceProtocol {
  let member: MemberClient
  let calls: OpenStreams<ClosableCall>

  static let notLeader = RPCError(code: .unknown, message: "election: not leader")
  static let noLeader = RPCError(code: .unknown, message: "election: no leader")
  static let missingLeader = RPCError(code: .unknown, message: "\"leader\" field must be provided")

  public func campaign(request: V3electionpb_CampaignRequest, context: ServerContext) async throws
    -> V3electionpb_CampaignResponse
  {
    let queue = KeyQueue(member: member, name: request.name, lease: request.lease)
    let (joined, header) = try await queue.enter(
      value: request.value, lease: request.lease, calls: calls, context: context
    ) { joined in
      // Campaigning again with the same lease and another value proclaims the new value.
      if let existing = joined.existingValue, existing != request.value {
        _ = try await proclaim(
          key: queue.key, revision: joined.revision, lease: request.lease, value: request.value,
          context: context)
      }
    }
    var answer = V3electionpb_CampaignResponse()
    answer.header = header
    answer.leader.name = request.name
    answer.leader.key = queue.key
    answer.leader.rev = joined.revision
    answer.leader.lease = request.lease
    return answer
  }

  public func proclaim(request: V3electionpb_ProclaimRequest, context: ServerContext) async throws
    -> V3electionpb_ProclaimResponse
  {
    guard request.hasLeader else { throw Self.missingLeader }
    let leader = request.leader
    var answer = V3electionpb_ProclaimResponse()
    answer.header = try await proclaim(
      key: leader.key, revision: leader.rev, lease: leader.lease, value: request.value, context: context)
    return answer
  }

  /// Puts `value` in the leader's key if it is still the generation created at `revision`.
  private func proclaim(key: Data, revision: Int64, lease: Int64, value: Data, context: ServerContext)
    async throws -> Etcdserverpb_ResponseHeader
  {
    var txn = Etcdserverpb_TxnRequest()
    txn.compare = [.createRevision(of: key, equals: revision)]
    var put = Etcdserverpb_PutRequest()
    put.key = key
    put.value = value
    put.lease = lease
    txn.success = [.init(put)]
    let answer = try await member.kv.txn(txn, context: context)
    guard answer.succeeded else { throw Self.notLeader }
    return answer.header
  }

  public func leader(request: V3electionpb_LeaderRequest, context: ServerContext) async throws
    -> V3electionpb_LeaderResponse
  {
    let queue = KeyQueue(member: member, name: request.name, lease: 0)
    let first = try await member.kv.range(queue.first(), context: context)
    guard let kv = first.kvs.first else { throw Self.noLeader }
    var answer = V3electionpb_LeaderResponse()
    answer.header = first.header
    answer.kv = kv
    return answer
  }

  /// Every leader in turn, and each value it proclaims: the current leader first, then each change
  /// from this member's watch. Proclamations that come faster than the client reads may be skipped
  /// in between (as with etcd); the newest is always sent.
  public func observe(
    request: V3electionpb_LeaderRequest, response: RPCWriter<V3electionpb_LeaderResponse>,
    context: ServerContext
  ) async throws {
    let queue = KeyQueue(member: member, name: request.name, lease: 0)
    try await calls.untilClosed(context) {
      while true {
        var (header, kv) = try await nextLeader(queue, context: context)
        try await response.write(V3electionpb_LeaderResponse(header: header, kv: kv))
        // Then its proclamations, until its key goes.
        let watch = WatchRequest(range: KeyRange(key: [UInt8](kv.key)), startRevision: header.revision + 1)
        try await member.watch(watch) { message in
          for event in message.events {
            if event.type == .delete { return .stop }
            kv = Mvccpb_KeyValue(event.kv)
            header = member.service.etcdHeader(revision: message.revision)
            try await response.write(V3electionpb_LeaderResponse(header: header, kv: kv))
          }
          return .next
        }
      }
    }
  }

  /// The current leader's key, or, when there is none, the first key put under the prefix.
  private func nextLeader(_ queue: KeyQueue, context: ServerContext) async throws
    -> (Etcdserverpb_ResponseHeader, Mvccpb_KeyValue)
  {
    let first = try await member.kv.range(queue.first(), context: context)
    if let kv = first.kvs.first { return (first.header, kv) }
    var found: (Etcdserverpb_ResponseHeader, Mvccpb_KeyValue)?
    let watch = WatchRequest(
      range: KeyRange.prefix([UInt8](queue.prefix)), startRevision: first.header.revision, filterDeletes: true
    )
    try await member.watch(watch) { message in
      guard let put = message.events.first(where: { $0.type == .put }) else { return .next }
      found = (member.service.etcdHeader(revision: put.kv.modRevision), Mvccpb_KeyValue(put.kv))
      return .stop
    }
    guard let found else { throw RPCError(code: .unavailable, message: "etcdserver: lost the watch") }
    return found
  }

  public func resign(request: V3electionpb_ResignRequest, context: ServerContext) async throws
    -> V3electionpb_ResignResponse
  {
    guard request.hasLeader else { throw Self.missingLeader }
    var leave = Etcdserverpb_TxnRequest()
    leave.compare = [.createRevision(of: request.leader.key, equals: request.leader.rev)]
    var delete = Etcdserverpb_DeleteRangeRequest()
    delete.key = request.leader.key
    leave.success = [.init(delete)]
    var answer = V3electionpb_ResignResponse()
    answer.header = try await member.kv.txn(leave, context: context).header
    return answer
  }
}

extension V3electionpb_LeaderResponse {
  init(header: Etcdserverpb_ResponseHeader, kv: Mvccpb_KeyValue) {
    self.init()
    self.header = header
    self.kv = kv
  }
}
