import JSON
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
    }
  }
}
