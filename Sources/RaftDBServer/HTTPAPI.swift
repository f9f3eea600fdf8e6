import Foundation
import HTTPTypes
import Hummingbird
import KVStore
import NIOCore
import RaftDBClient

/// The HTTP API of lessons 19 and 20, extended (see docs/API.md): a hand-written dispatcher in the
/// course's style — the path decides the handler, exact or by prefix — so that every error, including
/// unknown routes and methods, gets a JSON body, and the common requests take the shortest path.
public struct RaftDBHTTPResponder: HTTPResponder {
  public typealias Context = BasicRequestContext

  let node: RaftDBNode

  public init(node: RaftDBNode) { self.node = node }

  public func respond(to request: Request, context: Context) async throws -> Response {
    let start = ContinuousClock.now
    let (route, response) = await dispatch(request)
    node.metrics.recordRequest(
      route: route, status: Int(response.status.code), nanoseconds: (ContinuousClock.now - start).nanoseconds)
    return response
  }

  private func dispatch(_ request: Request) async -> (String, Response) {
    let path = request.uri.path
    let method = request.method
    if path == "/key" {
      guard method == .post else { return ("/key", methodNotAllowed("POST")) }
      return ("/key", await handle(request) { try await self.put($0) })
    }
    if path.hasPrefix("/key/") {
      let rest = path.dropFirst(5)
      switch method {
      case .get: return ("/key/{key}", await handle(request) { try await self.get(rest, $0) })
      case .delete: return ("/key/{key}", await handle(request) { try await self.delete(rest, $0) })
      case .post where rest.hasSuffix("/cas"):
        return (
          "/key/{key}/cas", await handle(request) { try await self.compareAndSet(rest.dropLast(4), $0) }
        )
      default: return ("/key/{key}", methodNotAllowed(rest.hasSuffix("/cas") ? "POST" : "GET, DELETE"))
      }
    }
    switch path {
    case "/join":
      guard method == .post else { return ("/join", methodNotAllowed("POST")) }
      return ("/join", await handle(request) { try await self.join($0) })
    case "/remove":
      guard method == .post else { return ("/remove", methodNotAllowed("POST")) }
      return ("/remove", await handle(request) { try await self.remove($0) })
    case "/status":
      guard method == .get else { return ("/status", methodNotAllowed("GET")) }
      return ("/status", await handle(request) { _ in try await self.status() })
    case "/metrics":
      guard method == .get else { return ("/metrics", methodNotAllowed("GET")) }
      return ("/metrics", metrics())
    case "/health":
      guard method == .get else { return ("/health", methodNotAllowed("GET")) }
      return ("/health", await health())
    default:
      return ("other", APIError.notFound("no route for \(path)").response)
    }
  }

  /// Runs a handler and turns any failure into its JSON error response.
  private func handle(_ request: Request, _ body: (Request) async throws -> Response) async -> Response {
    do {
      return try await body(request)
    } catch let error as APIError {
      return error.response
    } catch let error as NodeError {
      return response(for: error, request: request)
    } catch {
      return APIError.internalError("\(error)").response
    }
  }

  // MARK: Key-value

  /// `POST /key {"k": "v", ...}`: all pairs in one log entry, applied atomically.
  private func put(_ request: Request) async throws -> Response {
    let parsed = try await readJSON(request)
    guard case .object(let members) = parsed else {
      throw APIError.badRequest(
        "body must be a JSON object of string keys and string values, not \(parsed.typeName)")
    }
    guard !members.isEmpty else { throw APIError.badRequest("body must contain at least one key") }
    var pairs: [KeyValue] = []
    pairs.reserveCapacity(members.count)
    for (key, value) in members {
      try validateKey(key)
      guard case .string(let text) = value else {
        throw APIError.badRequest("value of \"\(key)\" must be a string, not \(value.typeName)")
      }
      try validateValue(text, for: key)
      pairs.append(KeyValue(key: key, value: text))
    }
    let outcome = try await node.write(.put(pairs), idempotencyKey: try idempotencyKey(request))
    guard case .put(let revision) = outcome.result else { return try unexpected(outcome.result) }
    var writer = JSONWriter()
    writer.beginObject()
    writer.field("revision", revision)
    writer.endObject()
    return json(.ok, writer.bytes, replayed: outcome.replayed)
  }

  /// `GET /key/{key}?level=stale|default|consistent`.
  private func get(_ rawKey: Substring, _ request: Request) async throws -> Response {
    let key = try decodeKey(rawKey)
    let levelParameter = request.uri.queryParameters["level"].map(String.init)
    guard let level = ReadLevel(parameter: levelParameter) else {
      throw APIError.badRequest(
        "unknown read level \"\(levelParameter ?? "")\"; use stale, default, consistent (or linearizable)")
    }
    guard let record = try await node.read(key, level: level) else {
      throw APIError.notFound("key \"\(key)\" not found")
    }
    var writer = JSONWriter(capacity: key.utf8.count + record.value.utf8.count + 16)
    writer.beginObject()
    writer.field(key, record.value)
    writer.endObject()
    var response = json(.ok, writer.bytes)
    response.headers[HTTPField.Name("X-Raftdb-Revision")!] = String(record.modRevision)
    return response
  }

  /// `DELETE /key/{key}`.
  private func delete(_ rawKey: Substring, _ request: Request) async throws -> Response {
    let key = try decodeKey(rawKey)
    let outcome = try await node.write(.delete(key: key), idempotencyKey: try idempotencyKey(request))
    guard case .delete(let existed, let revision) = outcome.result else {
      return try unexpected(outcome.result)
    }
    var writer = JSONWriter()
    writer.beginObject()
    writer.field("deleted", existed)
    writer.field("revision", revision)
    writer.endObject()
    return json(.ok, writer.bytes, replayed: outcome.replayed)
  }

  /// `POST /key/{key}/cas {"expect": "old" | null, "value": "new"}`.
  private func compareAndSet(_ rawKey: Substring, _ request: Request) async throws -> Response {
    let key = try decodeKey(rawKey)
    let body = try await readJSON(request)
    guard case .object(let members) = body else { throw APIError.badRequest("body must be a JSON object") }
    var expected: String??
    var value: String?
    for (name, field) in members {
      switch (name, field) {
      case ("expect", .string(let text)): expected = .some(text)
      case ("expect", .null): expected = .some(nil)
      case ("value", .string(let text)): value = text
      case ("expect", _), ("value", _):
        throw APIError.badRequest(
          "\"\(name)\" must be a string\(name == "expect" ? " or null" : ""), not \(field.typeName)")
      default: throw APIError.badRequest("unknown field \"\(name)\"; expected \"expect\" and \"value\"")
      }
    }
    guard let expected else { throw APIError.badRequest("missing \"expect\" (a string, or null for absent)") }
    guard let value else { throw APIError.badRequest("missing \"value\"") }
    try validateValue(value, for: key)
    if let old = expected { try validateValue(old, for: key) }
    let outcome = try await node.write(
      .compareAndSet(key: key, expected: expected, value: value), idempotencyKey: try idempotencyKey(request))
    guard case .compareAndSet(let succeeded, let current, let revision) = outcome.result else {
      return try unexpected(outcome.result)
    }
    var writer = JSONWriter()
    writer.beginObject()
    writer.field("succeeded", succeeded)
    writer.field("value", current)
    writer.field("revision", revision)
    writer.endObject()
    return json(.ok, writer.bytes, replayed: outcome.replayed)
  }

  // MARK: Membership and status

  /// `POST /join {"id", "addr", "haddr", "voter"}` (the course's `{"id", "addr"}` form is accepted).
  private func join(_ request: Request) async throws -> Response {
    let body = try await readJSON(request)
    guard case .object(let members) = body else { throw APIError.badRequest("body must be a JSON object") }
    var fields: [String: String] = [:]
    var voter = true
    for (name, field) in members {
      switch (name, field) {
      case ("id", .string(let text)), ("addr", .string(let text)), ("haddr", .string(let text)):
        fields[name] = text
      case ("voter", .bool(let flag)): voter = flag
      default: throw APIError.badRequest("unexpected field \"\(name)\" (\(field.typeName))")
      }
    }
    guard let id = fields["id"], !id.isEmpty else { throw APIError.badRequest("missing \"id\"") }
    guard let addr = fields["addr"], splitHostPort(addr) != nil else {
      throw APIError.badRequest("missing or malformed \"addr\" (the raft address, host:port)")
    }
    let haddr = fields["haddr"] ?? ""
    if !haddr.isEmpty && splitHostPort(haddr) == nil {
      throw APIError.badRequest("malformed \"haddr\" (the HTTP address, host:port)")
    }
    let outcome = try await node.addMember(
      MemberInfo(name: id, raftAddress: addr, httpAddress: haddr), asVoter: voter)
    var writer = JSONWriter()
    writer.beginObject()
    writer.field("id", id)
    writer.field("result", outcome)
    writer.endObject()
    return json(.ok, writer.bytes)
  }

  /// `POST /remove {"id"}`.
  private func remove(_ request: Request) async throws -> Response {
    let body = try await readJSON(request)
    guard case .object(let members) = body, members.count == 1, members[0].key == "id",
      case .string(let id) = members[0].value, !id.isEmpty
    else { throw APIError.badRequest("body must be {\"id\": \"<member name>\"}") }
    try await node.removeMember(named: id)
    var writer = JSONWriter()
    writer.beginObject()
    writer.field("removed", id)
    writer.endObject()
    return json(.ok, writer.bytes)
  }

  private func status() async throws -> Response {
    let status = try await node.status()
    var writer = JSONWriter(capacity: 512)
    writer.beginObject()
    writer.field("id", status.name)
    writer.field("state", status.state)
    writer.field("term", status.term)
    writer.key("leader")
    if let leader = status.leader {
      writer.beginObject()
      writer.field("id", leader.name)
      writer.field("raddr", leader.raftAddress)
      writer.field("haddr", leader.httpAddress)
      writer.endObject()
    } else {
      writer.string(nil)
    }
    writer.field("commit_index", status.commitIndex)
    writer.field("applied_index", status.appliedIndex)
    writer.field("last_log_index", status.lastLogIndex)
    writer.field("snapshot_index", status.snapshotIndex)
    writer.field("keys", UInt64(status.keys))
    writer.key("members")
    writer.beginArray()
    for member in status.members {
      writer.beginObject()
      writer.field("id", member.info.name)
      writer.field("raddr", member.info.raftAddress)
      writer.field("haddr", member.info.httpAddress)
      writer.field("voter", member.voter)
      writer.endObject()
    }
    writer.endArray()
    writer.endObject()
    return json(.ok, writer.bytes)
  }

  private func metrics() -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
    return Response(
      status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: node.metrics.prometheusText()))
    )
  }

  private func health() async -> Response {
    do {
      let status = try await node.status()
      var writer = JSONWriter()
      writer.beginObject()
      writer.field("status", "ok")
      writer.field("state", status.state)
      writer.endObject()
      return json(.ok, writer.bytes)
    } catch {
      return APIError.unavailable("\(error)").response
    }
  }

  // MARK: Helpers

  private func readJSON(_ request: Request) async throws -> JSONValue {
    var collected: [UInt8] = []
    do {
      for try await chunk in request.body {
        guard collected.count + chunk.readableBytes <= node.options.maxRequestBytes else {
          throw APIError.payloadTooLarge(
            "request body exceeds the \(node.options.maxRequestBytes)-byte limit")
        }
        collected.append(contentsOf: chunk.readableBytesView)
      }
    } catch let error as APIError {
      throw error
    } catch {
      throw APIError.badRequest("could not read the request body: \(error)")
    }
    guard !collected.isEmpty else { throw APIError.badRequest("request body is empty; expected JSON") }
    do {
      return try JSONParser.parse(collected)
    } catch {
      throw APIError.badRequest("\(error)")
    }
  }

  private func decodeKey(_ raw: Substring) throws -> String {
    guard let key = String(raw).removingPercentEncoding else {
      throw APIError.badRequest("key is not valid percent-encoded UTF-8")
    }
    try validateKey(key)
    return key
  }

  private func validateKey(_ key: String) throws {
    guard !key.isEmpty else { throw APIError.badRequest("key must not be empty") }
    let bytes = key.utf8.count
    guard bytes <= node.options.maxKeyBytes else {
      throw APIError.badRequest("key of \(bytes) bytes exceeds the \(node.options.maxKeyBytes)-byte limit")
    }
  }

  private func validateValue(_ value: String, for key: String) throws {
    let bytes = value.utf8.count
    guard bytes <= node.options.maxValueBytes else {
      throw APIError.payloadTooLarge(
        "value of \"\(key)\" has \(bytes) bytes, over the \(node.options.maxValueBytes)-byte limit")
    }
  }

  private func idempotencyKey(_ request: Request) throws -> String? {
    guard let key = request.headers[HTTPField.Name("Idempotency-Key")!] else { return nil }
    guard !key.isEmpty, key.utf8.count <= 256 else {
      throw APIError.badRequest("Idempotency-Key must be 1 to 256 bytes")
    }
    return key
  }

  private func unexpected(_ result: KVResult) throws -> Response {
    if case .rejected(let reason) = result { throw APIError.badRequest(reason) }
    throw APIError.internalError("unexpected result \(result)")
  }

  private func json(_ status: HTTPResponse.Status, _ body: [UInt8], replayed: Bool = false) -> Response {
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    if replayed { headers[HTTPField.Name("Idempotent-Replayed")!] = "true" }
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
  }

  private func methodNotAllowed(_ allowed: String) -> Response {
    var response = APIError.methodNotAllowed("method not allowed; use \(allowed)").response
    response.headers[.allow] = allowed
    return response
  }

  /// Maps node errors: not-leader becomes the course's 307 to the leader's same path and query.
  private func response(for error: NodeError, request: Request) -> Response {
    switch error {
    case .notLeader(let leader?) where !leader.httpAddress.isEmpty:
      var headers = HTTPFields()
      headers[.location] = "http://\(leader.httpAddress)\(request.uri.string)"
      headers[.contentType] = "application/json"
      var writer = JSONWriter()
      writer.beginObject()
      writer.field("error", "not the leader")
      writer.field("leader", leader.name)
      writer.endObject()
      return Response(
        status: .temporaryRedirect, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: writer.bytes))
      )
    case .notLeader:
      return APIError.unavailable("no leader").response
    case .outcomeUnknown(let why):
      var response = APIError.unavailable(why).response
      response.headers[HTTPField.Name("X-Raftdb-Outcome")!] = "unknown"
      return response
    case .unavailable(let why), .stopped(let why):
      return APIError.unavailable(why).response
    case .invalid(let why): return APIError.badRequest(why).response
    case .conflict(let why): return APIError.conflict(why).response
    case .notFound(let why): return APIError.notFound(why).response
    }
  }
}

/// An HTTP error with its `{"error": ...}` body.
enum APIError: Error {
  case badRequest(String)
  case notFound(String)
  case methodNotAllowed(String)
  case conflict(String)
  case payloadTooLarge(String)
  case unavailable(String)
  case internalError(String)

  var response: Response {
    let (status, message): (HTTPResponse.Status, String) =
      switch self {
      case .badRequest(let m): (.badRequest, m)
      case .notFound(let m): (.notFound, m)
      case .methodNotAllowed(let m): (.methodNotAllowed, m)
      case .conflict(let m): (.conflict, m)
      case .payloadTooLarge(let m): (.contentTooLarge, m)
      case .unavailable(let m): (.serviceUnavailable, m)
      case .internalError(let m): (.internalServerError, m)
      }
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    if status == .serviceUnavailable { headers[.retryAfter] = "1" }
    return Response(
      status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: JSONWriter.error(message))))
  }
}
