import GRPCCore
import KVStore
import RaftDBService

/// The one table from service errors to etcd's gRPC errors. clientv3 recognises an error by its
/// exact message (api/v3rpc/rpctypes: `errStringToError`) and retries by its code, so both are
/// etcd 3.4's, character for character, wherever etcd has an error for the case.
extension ServiceError {
  var rpcError: RPCError {
    switch self {
    case .store(let error): return error.rpcError
    case .notLeader(nil): return RPCError(code: .unavailable, message: "etcdserver: no leader")
    // A follower forwards the request (KV); where it cannot, this is etcd's own answer.
    // The leader's address rides along in the error's metadata, for `LeaderForwarder`.
    case .notLeader(let leader?):
      return RPCError(
        code: .failedPrecondition, message: "etcdserver: not leader",
        metadata: [LeaderForwarder.leaderKey: .string(leader.httpAddress)])
    case .outcomeUnknown: return RPCError(code: .unavailable, message: "etcdserver: request timed out")
    case .stopped: return RPCError(code: .unavailable, message: "etcdserver: server stopped")
    case .unavailable(let why): return RPCError(code: .unavailable, message: Self.etcdMessage(why))
    case .tooLarge(let why):
      // An answer over -max-response-bytes is the client's receive limit in etcd (gRPC's own
      // ResourceExhausted); a request over a limit is etcd's ErrRequestTooLarge.
      if why.hasPrefix("the answer") {
        return RPCError(code: .resourceExhausted, message: Self.etcdMessage(why))
      }
      return RPCError(code: .invalidArgument, message: "etcdserver: request is too large")
    case .invalidArgument(let why):
      // The store's limits already speak etcd's messages where etcd has one.
      let code: RPCError.Code = why == "etcdserver: too large lease TTL" ? .outOfRange : .invalidArgument
      return RPCError(code: code, message: Self.etcdMessage(why))
    case .conflict(let why), .failedPrecondition(let why):
      return RPCError(code: .failedPrecondition, message: Self.etcdMessage(why))
    case .notFound(let why): return RPCError(code: .notFound, message: Self.etcdMessage(why))
    case .internalError(let why): return RPCError(code: .internalError, message: why)
    }
  }

  /// etcd prefixes its server's messages with "etcdserver: ".
  static func etcdMessage(_ why: String) -> String {
    why.hasPrefix("etcdserver: ") ? why : "etcdserver: \(why)"
  }
}

extension MVCCError {
  var rpcError: RPCError {
    switch self {
    case .compacted:
      RPCError(code: .outOfRange, message: "etcdserver: mvcc: required revision has been compacted")
    case .futureRevision:
      RPCError(code: .outOfRange, message: "etcdserver: mvcc: required revision is a future revision")
    case .keyNotFound: RPCError(code: .invalidArgument, message: "etcdserver: key not found")
    case .duplicateKey:
      RPCError(code: .invalidArgument, message: "etcdserver: duplicate key given in txn request")
    case .emptyKey: RPCError(code: .invalidArgument, message: "etcdserver: key is not provided")
    case .leaseNotFound: RPCError(code: .notFound, message: "etcdserver: requested lease not found")
    case .leaseExists: RPCError(code: .failedPrecondition, message: "etcdserver: lease already exists")
    // etcd has no error of its own for a negative id (its ids are unsigned inside).
    case .invalidLeaseID: RPCError(code: .invalidArgument, message: description)
    }
  }
}

/// Runs `body`, turning a service error (or a stopped member's loop) into etcd's gRPC error.
func etcdErrors<T>(_ body: () async throws -> T) async throws -> T {
  do {
    return try await body()
  } catch let error as ServiceError {
    throw error.rpcError
  } catch let error as RPCError {
    throw error
  } catch {
    throw RPCError(code: .unavailable, message: "etcdserver: server stopped")
  }
}
