import EtcdAPI
import Foundation
import GRPCCore

/// etcd's v3lock service: Lock queues a key under the caller's lease and returns once it is the
/// oldest (`KeyQueue`); Unlock deletes it. The client keeps the lease alive; when it stops, the
/// lease expires and the lock passes on. The key's create revision (in the returned key's
/// generation) is the fencing token: guard writes with `create_revision(key) = token`
/// (docs/LOCKS.md says what a lock does not guarantee).
///
/// The server's own calls go through the KV service, so a follower serves a lock as the leader
/// does. A lock wait that is cancelled (the client went away, the server stops) dequeues its key.
public struct EtcdLockService: V3lockpb_Lock.SimpleServiceProtocol {
  let member: MemberClient
  let calls: OpenStreams<ClosableCall>

  public func lock(request: V3lockpb_LockRequest, context: ServerContext) async throws
    -> V3lockpb_LockResponse
  {
    let queue = KeyQueue(member: member, name: request.name, lease: request.lease)
    let (_, header) = try await queue.enter(
      value: Data(), lease: request.lease, calls: calls, context: context)
    var answer = V3lockpb_LockResponse()
    answer.header = header
    answer.key = queue.key
    return answer
  }

  public func unlock(request: V3lockpb_UnlockRequest, context: ServerContext) async throws
    -> V3lockpb_UnlockResponse
  {
    var delete = Etcdserverpb_TxnRequest()
    var operation = Etcdserverpb_DeleteRangeRequest()
    operation.key = request.key
    delete.success = [.init(operation)]
    var answer = V3lockpb_UnlockResponse()
    answer.header = try await member.kv.txn(delete, context: context).header
    return answer
  }
}
