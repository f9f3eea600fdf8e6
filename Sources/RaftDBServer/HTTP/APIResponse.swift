import Foundation
import JSON
import NIOCore
import NIOHTTP1

/// An HTTP response of the API: a body built in memory (every answer but a watch's is small), or a
/// body written over time by `stream` (a watch's event stream), which then ends the connection.
struct APIResponse: Sendable {
  var status: HTTPResponseStatus
  var headers: HTTPHeaders
  var body: [UInt8]
  var stream: (any HTTPStreamingBody)? = nil

  init(
    status: HTTPResponseStatus, headers: HTTPHeaders, body: [UInt8], stream: (any HTTPStreamingBody)? = nil
  ) {
    self.status = status
    self.headers = headers
    self.body = body
    self.stream = stream
  }

  /// A JSON answer. The body ends with a newline, as etcd's and most APIs' do, so that `curl`'s
  /// output does not run into the shell prompt; JSON parsers skip it as whitespace.
  static func json(_ status: HTTPResponseStatus, _ body: [UInt8]) -> APIResponse {
    var body = body
    body.append(UInt8(ascii: "\n"))
    return APIResponse(status: status, headers: ["Content-Type": "application/json"], body: body)
  }
}

/// A request as the API sees it: the head and the whole body (already bounded by the connection
/// handler).
struct APIRequest: Sendable {
  var head: HTTPRequestHead
  var body: ByteBuffer?

  /// Path and query: the target without scheme and authority when it came in absolute form
  /// (`http://host:8091/key/a`, as proxies send it).
  var target: Substring {
    let uri = head.uri[...]
    guard uri.hasPrefix("http://") || uri.hasPrefix("https://") else { return uri }
    let afterScheme = uri[uri.index(uri.firstIndex(of: ":")!, offsetBy: 3)...]
    return afterScheme.firstIndex(of: "/").map { afterScheme[$0...] } ?? "/"
  }

  /// The path without the query.
  var path: Substring {
    let target = target
    return target.firstIndex(of: "?").map { target[..<$0] } ?? target
  }

  /// The value of the first query parameter `name`, percent-decoded; nil when absent.
  func queryParameter(_ name: String) -> String? {
    let target = target
    guard let mark = target.firstIndex(of: "?") else { return nil }
    for pair in target[target.index(after: mark)...].split(
      separator: "&", omittingEmptySubsequences: true)
    {
      let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
      guard parts[0] == name else { continue }
      let raw = parts.count > 1 ? parts[1] : ""
      // In a query `+` stands for a space (HTML forms); in a path it is itself.
      let spaced = raw.replacingOccurrences(of: "+", with: " ")
      return spaced.removingPercentEncoding ?? spaced
    }
    return nil
  }
}

extension APIRequest {
  /// The names of every query parameter, in order.
  var queryParameterNames: [Substring] {
    let target = target
    guard let mark = target.firstIndex(of: "?") else { return [] }
    return target[target.index(after: mark)...].split(separator: "&", omittingEmptySubsequences: true).map {
      $0.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[0]
    }
  }

  /// Refuses a query parameter that is not in `allowed`: a misspelt option silently ignored would
  /// answer a different question than the one asked.
  func requireOnlyQueryParameters(_ allowed: Set<Substring>) throws(APIError) {
    for name in queryParameterNames where !allowed.contains(name) {
      throw APIError.badRequest(
        "unknown query parameter \"\(name)\"; this route takes \(allowed.sorted().joined(separator: ", "))")
    }
  }
}

/// The routes as labelled in metrics (a fixed set, so that a client cannot grow the label space).
enum APIRoute: String, Sendable, CaseIterable {
  case putKeys = "/key"
  case key = "/key/{key}"
  case compareAndSet = "/key/{key}/cas"
  case join = "/join"
  case remove = "/remove"
  case transferLeadership = "/transfer"
  case status = "/status"
  case metrics = "/metrics"
  case health = "/health"
  case readiness = "/readyz"
  case liveness = "/livez"
  case version = "/version"
  case range = "/key/{prefix}?prefix=true"
  case txn = "/txn"
  case lease = "/lease"
  case compact = "/compact"
  case watch = "/watch/{key}"
  case other
}

/// An HTTP error with its `{"error": ...}` body.
enum APIError: Error {
  case badRequest(String)
  case notFound(String)
  case methodNotAllowed(String, allowed: String)
  case conflict(String)
  case payloadTooLarge(String)
  case unavailable(String)
  case internalError(String)

  var response: APIResponse {
    let (status, message): (HTTPResponseStatus, String) =
      switch self {
      case .badRequest(let m): (.badRequest, m)
      case .notFound(let m): (.notFound, m)
      case .methodNotAllowed(let m, _): (.methodNotAllowed, m)
      case .conflict(let m): (.conflict, m)
      case .payloadTooLarge(let m): (.payloadTooLarge, m)
      case .unavailable(let m): (.serviceUnavailable, m)
      case .internalError(let m): (.internalServerError, m)
      }
    var response = APIResponse.json(status, JSONWriter.error(message))
    if status == .serviceUnavailable { response.headers.add(name: "Retry-After", value: "1") }
    if case .methodNotAllowed(_, let allowed) = self { response.headers.add(name: "Allow", value: allowed) }
    return response
  }
}
