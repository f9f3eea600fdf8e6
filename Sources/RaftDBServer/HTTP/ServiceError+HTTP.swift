import JSON
import KVStore
import NIOHTTP1
import RaftDBService

extension ServiceError {
  /// The one table from service errors to HTTP answers. A `notLeader` with a known leader is the
  /// course's 307 to the leader's same path and query (its body names the leader and its HTTP
  /// address, for a client that does not follow `Location`); every 503 carries `Retry-After`, and one whose
  /// write may still apply also says `X-Raftdb-Outcome: unknown`.
  func response(to request: APIRequest) -> APIResponse {
    switch self {
    case .notLeader(let leader?) where !leader.httpAddress.isEmpty:
      var writer = JSONWriter()
      writer.beginObject()
      writer.field("error", "not the leader; the leader is \(leader.name) at \(leader.httpAddress)")
      writer.field("leader", leader.name)
      writer.field("haddr", leader.httpAddress)
      writer.endObject()
      var response = APIResponse.json(.temporaryRedirect, writer.bytes)
      response.headers.add(name: "Location", value: "http://\(leader.httpAddress)\(request.target)")
      return response
    case .notLeader: return APIError.unavailable("no leader").response
    case .outcomeUnknown(let why):
      var response = APIError.unavailable(why).response
      response.headers.add(name: "X-Raftdb-Outcome", value: "unknown")
      return response
    case .unavailable(let why), .stopped(let why): return APIError.unavailable(why).response
    case .invalidArgument(let why): return APIError.badRequest(why).response
    case .tooLarge(let why): return APIError.payloadTooLarge(why).response
    case .conflict(let why), .failedPrecondition(let why): return APIError.conflict(why).response
    case .notFound(let why): return APIError.notFound(why).response
    case .internalError(let why): return APIError.internalError(why).response
    case .store(let error): return Self.response(to: error)
    }
  }

  /// etcd's store errors: a missing key or lease is a 404, a taken lease id a 409, the rest are
  /// the request's fault (400). A compacted read names the compacted revision, so that a client
  /// can start again after it.
  private static func response(to error: MVCCError) -> APIResponse {
    let status: HTTPResponseStatus =
      switch error {
      case .keyNotFound, .leaseNotFound: .notFound
      case .leaseExists: .conflict
      case .compacted, .futureRevision, .duplicateKey, .emptyKey, .invalidLeaseID: .badRequest
      }
    var writer = JSONWriter()
    writer.beginObject()
    writer.field("error", error.description)
    if case .compacted(let revision) = error { writer.field("compact_revision", UInt64(revision)) }
    writer.endObject()
    return APIResponse.json(status, writer.bytes)
  }
}
