import EtcdAPI
import GRPCCore
import KVStore
import NIOCore
import RaftDBService

/// etcd's Maintenance service, as far as it means something here: Status (what `etcdctl endpoint
/// status` prints), HashKV (the same on every member at a revision, to check that replicas agree),
/// Alarm (raftdb raises none), Defragment (nothing to defragment: the store is in memory and its
/// snapshot is rewritten whole, so it succeeds at once) and MoveLeader (leadership transfer). Hash
/// and Snapshot answer Unimplemented for now.
public struct EtcdMaintenanceService: Etcdserverpb_Maintenance.SimpleServiceProtocol {
  let service: KVService
  let eventLoop: any EventLoop

  public init(service: KVService, eventLoop: any EventLoop) {
    self.service = service
    self.eventLoop = eventLoop
  }

  func header(revision: Int64? = nil) -> Etcdserverpb_ResponseHeader {
    service.etcdHeader(revision: revision)
  }

  /// etcd's API version it speaks, with raftdb's own build version as a semver pre-release part
  /// (clients parse the version; `3.4.0-raftdb.N` parses as 3.4.0).
  var version: String { "3.4.0-raftdb.\(service.versions().server)" }

  public func status(request: Etcdserverpb_StatusRequest, context: ServerContext) async throws
    -> Etcdserverpb_StatusResponse
  {
    try await etcdErrors {
      let status = try await service.status(on: eventLoop).get()
      var answer = Etcdserverpb_StatusResponse()
      answer.header = header()
      answer.version = version
      answer.leader =
        status.leader.flatMap { leader in status.members.first { $0.info.name == leader.name } }?.id
        .rawValue ?? 0
      answer.raftIndex = status.commitIndex
      answer.raftTerm = status.term
      answer.raftAppliedIndex = status.appliedIndex
      answer.isLearner = status.members.first { $0.id == status.memberID }.map { !$0.voter } ?? false
      return answer
    }
  }

  /// An FNV-1a hash of every key's state at the revision (0: the newest), in key order, read from
  /// this member's own store: members that applied the same log hash the same. etcd hashes its
  /// bolt database differently, so compare raftdb members with each other, not with etcd.
  public func hashKV(request: Etcdserverpb_HashKVRequest, context: ServerContext) async throws
    -> Etcdserverpb_HashKVResponse
  {
    try await etcdErrors {
      var range = RangeRequest(range: KeyRange(key: [0], rangeEnd: [0]))
      range.revision = request.revision
      let result = try await service.range(range, level: .stale, on: eventLoop).get()
      var hash: UInt64 = 0xcbf2_9ce4_8422_2325
      func mix(_ bytes: some Sequence<UInt8>) {
        for byte in bytes {
          hash ^= UInt64(byte)
          hash = hash &* 0x0000_0100_0000_01b3
        }
      }
      for kv in result.response.kvs {
        mix(kv.key)
        mix(kv.value)
        for number in [kv.createRevision, kv.modRevision, kv.version, kv.lease] {
          withUnsafeBytes(of: number.littleEndian) { mix($0) }
        }
      }
      var answer = Etcdserverpb_HashKVResponse()
      answer.header = header(revision: result.revision)
      answer.hash = UInt32(truncatingIfNeeded: hash ^ (hash >> 32))
      answer.compactRevision = service.compactedRevision()
      return answer
    }
  }

  public func alarm(request: Etcdserverpb_AlarmRequest, context: ServerContext) async throws
    -> Etcdserverpb_AlarmResponse
  {
    var answer = Etcdserverpb_AlarmResponse()
    answer.header = header()
    return answer
  }

  public func defragment(request: Etcdserverpb_DefragmentRequest, context: ServerContext) async throws
    -> Etcdserverpb_DefragmentResponse
  {
    var answer = Etcdserverpb_DefragmentResponse()
    answer.header = header()
    return answer
  }

  public func moveLeader(request: Etcdserverpb_MoveLeaderRequest, context: ServerContext) async throws
    -> Etcdserverpb_MoveLeaderResponse
  {
    try await etcdErrors {
      let status = try await service.status(on: eventLoop).get()
      guard let target = status.members.first(where: { $0.id.rawValue == request.targetID }) else {
        throw RPCError(code: .notFound, message: "etcdserver: member not found")
      }
      guard target.voter else {
        throw RPCError(code: .failedPrecondition, message: "etcdserver: leadership cannot move to a learner")
      }
      _ = try await service.transferLeadership(to: target.info.name)
      var answer = Etcdserverpb_MoveLeaderResponse()
      answer.header = header()
      return answer
    }
  }

  public func hash(request: Etcdserverpb_HashRequest, context: ServerContext) async throws
    -> Etcdserverpb_HashResponse
  {
    throw RPCError(code: .unimplemented, message: "raftdb does not serve Hash yet; HashKV compares members")
  }

  public func snapshot(
    request: Etcdserverpb_SnapshotRequest, response: RPCWriter<Etcdserverpb_SnapshotResponse>,
    context: ServerContext
  ) async throws {
    throw RPCError(
      code: .unimplemented, message: "raftdb does not stream snapshots over gRPC yet; see raftctl snapshot")
  }
}
