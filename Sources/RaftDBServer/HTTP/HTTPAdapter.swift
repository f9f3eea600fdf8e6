import Foundation
import JSON
import KVStore
import NIOCore
import NIOHTTP1
import Raft
import RaftDBAPI
import RaftDBService

/// The HTTP API of lessons 19 and 20, extended (see docs/API.md), as a thin adapter over `KVService`:
/// it decodes JSON bodies, paths and headers into service calls and encodes what the service answers
/// (errors through the one table in `ServiceError+HTTP.swift`). Validation, limits and the meaning
/// of each operation live in the service, so that a second protocol does not copy them.
///
/// A hand-written dispatcher in the course's style — the path decides the handler, exact or by
/// prefix — so that every error, including unknown routes and methods, gets a JSON body. Every
/// handler returns a future on the connection's event loop rather than suspending a task: a `stale`
/// read is answered inline, and a write or a confirmed read makes one hop to the node's loop and one
/// back. (Running handlers as Swift concurrency tasks cost two more thread hand-offs per request,
/// about 100 µs; BENCHMARKS.md has the measurements.)
struct HTTPAdapter: HTTPResponding {
  let service: KVService
  let metrics: NodeMetrics

  func recordRequest(route: APIRoute, status: Int, nanoseconds: Int64) {
    metrics.recordRequest(route: route, status: status, nanoseconds: nanoseconds)
  }

  func respond(to request: APIRequest, on eventLoop: any EventLoop) -> (
    APIRoute, EventLoopFuture<APIResponse>
  ) {
    let (route, response) = dispatch(request, on: eventLoop)
    return (route, response.recover { self.errorResponse(for: $0, request: request) })
  }

  private func dispatch(_ request: APIRequest, on eventLoop: any EventLoop) -> (
    APIRoute, EventLoopFuture<APIResponse>
  ) {
    let path = request.path
    let method = request.head.method
    func run(_ route: APIRoute, _ body: () throws -> EventLoopFuture<APIResponse>) -> (
      APIRoute, EventLoopFuture<APIResponse>
    ) {
      do {
        return (route, try body())
      } catch {
        return (route, eventLoop.makeFailedFuture(error))
      }
    }
    func refuse(_ route: APIRoute, allowed: String) -> (APIRoute, EventLoopFuture<APIResponse>) {
      (
        route,
        eventLoop.makeFailedFuture(
          APIError.methodNotAllowed("method not allowed; use \(allowed)", allowed: allowed))
      )
    }
    if path == "/key" {
      guard method == .POST else { return refuse(.putKeys, allowed: "POST") }
      return run(.putKeys) { try put(request, on: eventLoop) }
    }
    if path.hasPrefix("/key/") {
      let rest = path.dropFirst(5)
      switch method {
      case .GET where Self.wantsRange(request): return run(.range) { try range(rest, request, on: eventLoop) }
      case .GET: return run(.key) { try get(rest, request, on: eventLoop) }
      case .PUT: return run(.key) { try putOne(rest, request, on: eventLoop) }
      case .DELETE: return run(.key) { try delete(rest, request, on: eventLoop) }
      case .POST where rest.hasSuffix("/cas"):
        return run(.compareAndSet) { try compareAndSet(rest.dropLast(4), request, on: eventLoop) }
      default:
        return rest.hasSuffix("/cas")
          ? refuse(.compareAndSet, allowed: "POST") : refuse(.key, allowed: "GET, PUT, DELETE")
      }
    }
    if path.hasPrefix("/watch/") {
      guard method == .GET else { return refuse(.watch, allowed: "GET") }
      return run(.watch) { try watch(path.dropFirst(7), request, on: eventLoop) }
    }
    if path == "/lease" || path.hasPrefix("/lease/") {
      return run(.lease) { try lease(path.dropFirst(path == "/lease" ? 6 : 7), request, on: eventLoop) }
    }
    switch path {
    case "/txn":
      guard method == .POST else { return refuse(.txn, allowed: "POST") }
      return run(.txn) { try txn(request, on: eventLoop) }
    case "/compact":
      guard method == .POST else { return refuse(.compact, allowed: "POST") }
      return run(.compact) { try compact(request, on: eventLoop) }
    case "/join":
      guard method == .POST else { return refuse(.join, allowed: "POST") }
      return run(.join) { try join(request, on: eventLoop) }
    case "/remove":
      guard method == .POST else { return refuse(.remove, allowed: "POST") }
      return run(.remove) { try remove(request, on: eventLoop) }
    case "/transfer":
      guard method == .POST else { return refuse(.transferLeadership, allowed: "POST") }
      return run(.transferLeadership) { try transferLeadership(request, on: eventLoop) }
    case "/status":
      guard method == .GET else { return refuse(.status, allowed: "GET") }
      return (.status, service.status(on: eventLoop).map(statusResponse))
    case "/metrics":
      guard method == .GET else { return refuse(.metrics, allowed: "GET") }
      let response = APIResponse(
        status: .ok, headers: ["Content-Type": "text/plain; version=0.0.4; charset=utf-8"],
        body: metrics.prometheusText())
      return (.metrics, eventLoop.makeSucceededFuture(response))
    case "/version":
      guard method == .GET else { return refuse(.version, allowed: "GET") }
      let versions = service.versions()
      var writer = JSONWriter()
      writer.beginObject()
      writer.field("server", UInt64(versions.server))
      writer.field("cluster", UInt64(versions.cluster))
      writer.endObject()
      return (.version, eventLoop.makeSucceededFuture(.json(.ok, writer.bytes)))
    case "/health", "/readyz":
      let route: APIRoute = path == "/health" ? .health : .readiness
      guard method == .GET else { return refuse(route, allowed: "GET") }
      return (route, readiness(on: eventLoop))
    case "/livez":
      guard method == .GET else { return refuse(.liveness, allowed: "GET") }
      return (.liveness, liveness(on: eventLoop))
    default:
      return (.other, eventLoop.makeFailedFuture(APIError.notFound("no route for \(path)")))
    }
  }

  // MARK: Key-value

  /// `POST /key {"k": "v", ...}`: all pairs in one log entry, applied atomically.
  private func put(_ request: APIRequest, on eventLoop: any EventLoop) throws -> EventLoopFuture<APIResponse>
  {
    let parsed = try readJSON(request)
    guard case .object(let members) = parsed else {
      throw APIError.badRequest(
        "body must be a JSON object of string keys and string values, not \(parsed.typeName)")
    }
    guard !members.isEmpty else { throw APIError.badRequest("body must contain at least one key") }
    var pairs: [KeyValue] = []
    pairs.reserveCapacity(members.count)
    for (key, value) in members {
      guard case .string(let text) = value else {
        throw APIError.badRequest("value of \"\(key)\" must be a string, not \(value.typeName)")
      }
      pairs.append(KeyValue(key: key, value: text))
    }
    if !request.queryParameterNames.isEmpty { return try putUnderLease(pairs, request, on: eventLoop) }
    return service.put(pairs, idempotencyKey: idempotencyKey(request), on: eventLoop).map { result in
      var writer = JSONWriter()
      writer.beginObject()
      writer.field("revision", result.revision)
      writer.endObject()
      return .written(writer.bytes, replayed: result.replayed)
    }
  }

  /// `GET /key/{key}?level=stale|default|consistent`.
  private func get(_ rawKey: Substring, _ request: APIRequest, on eventLoop: any EventLoop) throws
    -> EventLoopFuture<APIResponse>
  {
    let key = try decodeKey(rawKey)
    let levelParameter = request.queryParameter("level")
    guard let level = ReadLevel(parameter: levelParameter) else {
      throw APIError.badRequest(
        "unknown read level \"\(levelParameter ?? "")\"; use stale, default, consistent (or linearizable)")
    }
    return service.get(key, level: level, on: eventLoop).flatMapThrowing { try readResponse(key, $0) }
  }

  private func readResponse(_ key: String, _ record: KVRecord?) throws -> APIResponse {
    guard let record else { throw ServiceError.notFound("key \"\(key)\" not found") }
    var writer = JSONWriter(capacity: key.utf8.count + record.value.utf8.count + 16)
    writer.beginObject()
    writer.field(key, record.value)
    writer.endObject()
    var response = APIResponse.json(.ok, writer.bytes)
    response.headers.add(name: "X-Raftdb-Revision", value: String(record.modRevision))
    return response
  }

  /// `DELETE /key/{key}`.
  private func delete(_ rawKey: Substring, _ request: APIRequest, on eventLoop: any EventLoop) throws
    -> EventLoopFuture<APIResponse>
  {
    let key = try decodeKey(rawKey)
    return service.delete(key, idempotencyKey: idempotencyKey(request), on: eventLoop).map { result in
      var writer = JSONWriter()
      writer.beginObject()
      writer.field("deleted", result.existed)
      writer.field("revision", result.revision)
      writer.endObject()
      return .written(writer.bytes, replayed: result.replayed)
    }
  }

  /// `POST /key/{key}/cas {"expect": "old" | null, "value": "new" | null}`: compare-and-set, or with
  /// `"value": null` compare-and-delete.
  private func compareAndSet(_ rawKey: Substring, _ request: APIRequest, on eventLoop: any EventLoop) throws
    -> EventLoopFuture<APIResponse>
  {
    let key = try decodeKey(rawKey)
    let body = try readJSON(request)
    guard case .object(let members) = body else { throw APIError.badRequest("body must be a JSON object") }
    var expected: String??
    var value: String??
    for (name, field) in members {
      switch (name, field) {
      case ("expect", .string(let text)): expected = .some(text)
      case ("expect", .null): expected = .some(nil)
      case ("value", .string(let text)): value = .some(text)
      case ("value", .null): value = .some(nil)
      case ("expect", _), ("value", _):
        throw APIError.badRequest("\"\(name)\" must be a string or null, not \(field.typeName)")
      default: throw APIError.badRequest("unknown field \"\(name)\"; expected \"expect\" and \"value\"")
      }
    }
    guard let expected else { throw APIError.badRequest("missing \"expect\" (a string, or null for absent)") }
    guard let value else { throw APIError.badRequest("missing \"value\" (a string, or null to delete)") }
    let written: EventLoopFuture<CompareAndSetResult>
    switch (expected, value) {
    case (_, let value?):
      written = service.compareAndSet(
        key, expected: expected, value: value, idempotencyKey: idempotencyKey(request), on: eventLoop)
    case (let expected?, nil):
      // Compare-and-delete: release a lock only while holding it (cluster version 2).
      written = service.compareAndDelete(
        key, expected: expected, idempotencyKey: idempotencyKey(request), on: eventLoop)
    case (nil, nil):
      throw APIError.badRequest("\"value\": null deletes the key, which needs an \"expect\" string")
    }
    return written.map { result in
      var writer = JSONWriter()
      writer.beginObject()
      writer.field("succeeded", result.succeeded)
      writer.field("value", result.current)
      writer.field("revision", result.revision)
      writer.endObject()
      return .written(writer.bytes, replayed: result.replayed)
    }
  }

  // MARK: Membership and status

  /// `POST /join {"id", "addr", "haddr", "voter", "member_id"}` (the course's `{"id", "addr"}` form
  /// is accepted; without `member_id` the member gets the legacy id of its name). Joining takes
  /// several steps with waits between them, so it runs as a task.
  private func join(_ request: APIRequest, on eventLoop: any EventLoop) throws -> EventLoopFuture<APIResponse>
  {
    let body = try readJSON(request)
    guard case .object(let members) = body else { throw APIError.badRequest("body must be a JSON object") }
    var fields: [String: String] = [:]
    var voter = true
    for (name, field) in members {
      switch (name, field) {
      case ("id", .string(let text)), ("addr", .string(let text)), ("haddr", .string(let text)),
        ("member_id", .string(let text)):
        fields[name] = text
      case ("voter", .bool(let flag)): voter = flag
      default: throw APIError.badRequest("unexpected field \"\(name)\" (\(field.typeName))")
      }
    }
    guard let id = fields["id"], !id.isEmpty else { throw APIError.badRequest("missing \"id\"") }
    guard let addr = fields["addr"] else {
      throw APIError.badRequest("missing \"addr\" (the raft address, host:port)")
    }
    var memberID: NodeID?
    if let text = fields["member_id"] {
      guard let parsed = NodeID(hex: text) else {
        throw APIError.badRequest("malformed \"member_id\" (1 to 16 hex digits, not zero)")
      }
      memberID = parsed
    }
    let promise = eventLoop.makePromise(of: APIResponse.self)
    promise.completeWithTask { [service, voter, memberID, fields] in
      let joined = try await service.join(
        name: id, raftAddress: addr, httpAddress: fields["haddr"] ?? "", memberID: memberID, asVoter: voter)
      var writer = JSONWriter()
      writer.beginObject()
      writer.field("id", id)
      writer.field("result", joined.outcome)
      writer.field("member_id", joined.memberID.hex)
      writer.endObject()
      return APIResponse.json(.ok, writer.bytes)
    }
    return promise.futureResult
  }

  /// `POST /remove {"id"}`.
  private func remove(_ request: APIRequest, on eventLoop: any EventLoop) throws -> EventLoopFuture<
    APIResponse
  > {
    let body = try readJSON(request)
    guard case .object(let members) = body, members.count == 1, members[0].key == "id",
      case .string(let id) = members[0].value, !id.isEmpty
    else { throw APIError.badRequest("body must be {\"id\": \"<member name>\"}") }
    let promise = eventLoop.makePromise(of: APIResponse.self)
    promise.completeWithTask { [service] in
      try await service.remove(name: id)
      var writer = JSONWriter()
      writer.beginObject()
      writer.field("removed", id)
      writer.endObject()
      return APIResponse.json(.ok, writer.bytes)
    }
    return promise.futureResult
  }

  /// `POST /transfer {"id": "<member name>"}`, or with no body (or `{}`): to the most
  /// caught-up voter. Answers once the new leader has taken over.
  private func transferLeadership(_ request: APIRequest, on eventLoop: any EventLoop) throws
    -> EventLoopFuture<APIResponse>
  {
    var target: String?
    if let body = request.body, body.readableBytes > 0 {
      let parsed = try readJSON(request)
      guard case .object(let members) = parsed else {
        throw APIError.badRequest("body must be {\"id\": \"<member name>\"} or empty")
      }
      for (name, field) in members {
        guard name == "id", case .string(let text) = field else {
          throw APIError.badRequest("body must be {\"id\": \"<member name>\"} or empty")
        }
        target = text
      }
    }
    let promise = eventLoop.makePromise(of: APIResponse.self)
    promise.completeWithTask { [service, target] in
      let leader = try await service.transferLeadership(to: target)
      var writer = JSONWriter()
      writer.beginObject()
      writer.field("leader", leader.name)
      writer.field("haddr", leader.httpAddress)
      writer.endObject()
      return APIResponse.json(.ok, writer.bytes)
    }
    return promise.futureResult
  }

  private func statusResponse(_ status: MemberStatus) -> APIResponse {
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
      writer.field("member_id", member.id.hex)
      writer.endObject()
    }
    writer.endArray()
    writer.field("member_id", status.memberID.hex)
    writer.field("cluster_id", HexID.format(status.clusterID))
    writer.endObject()
    return .json(.ok, writer.bytes)
  }

  /// `GET /livez`, for supervisors that restart a process which no longer answers: 200 while the
  /// node's loop responds, whatever the cluster around it does (a member cut off from its quorum
  /// is alive, and restarting it would not help). It goes through the node's loop on purpose.
  private func liveness(on eventLoop: any EventLoop) -> EventLoopFuture<APIResponse> {
    service.status(on: eventLoop).map { status in
      var writer = JSONWriter()
      writer.beginObject()
      writer.field("status", "ok")
      writer.field("state", status.state)
      writer.endObject()
      return .json(.ok, writer.bytes)
    }.flatMapErrorThrowing { throw APIError.unavailable("\($0)") }
  }

  /// `GET /health` and `GET /readyz`: 200 only while this member can serve linearizable requests
  /// (`Readiness`), else 503 with the reason, so that a load balancer sends nothing to a member that
  /// is up but cut off.
  private func readiness(on eventLoop: any EventLoop) -> EventLoopFuture<APIResponse> {
    service.readiness(on: eventLoop).map { readiness in
      var writer = JSONWriter()
      writer.beginObject()
      if let problem = readiness.problem {
        writer.field("error", "not ready: \(problem)")
      } else {
        writer.field("status", "ok")
      }
      writer.field("state", readiness.state)
      writer.field("leader", readiness.leader)
      writer.endObject()
      guard readiness.isReady else {
        var response = APIResponse.json(.serviceUnavailable, writer.bytes)
        response.headers.add(name: "Retry-After", value: "1")
        return response
      }
      return .json(.ok, writer.bytes)
    }.flatMapErrorThrowing { throw APIError.unavailable("\($0)") }
  }

  // MARK: Helpers

  func readJSON(_ request: APIRequest) throws(APIError) -> JSONValue {
    guard let body = request.body, body.readableBytes > 0 else {
      throw APIError.badRequest("request body is empty; expected JSON")
    }
    do {
      return try JSONParser.parse(Array(body.readableBytesView))
    } catch {
      throw APIError.badRequest("\(error)")
    }
  }

  func decodeKey(_ raw: Substring) throws(APIError) -> String {
    guard let key = String(raw).removingPercentEncoding else {
      throw APIError.badRequest("key is not valid percent-encoded UTF-8")
    }
    return key
  }

  /// The `Idempotency-Key` header (the service checks its form).
  func idempotencyKey(_ request: APIRequest) -> String? {
    request.head.headers.first(name: "Idempotency-Key")
  }

  /// Maps a failure to its response: service errors through their table, API errors as they say,
  /// anything else as the node having stopped.
  private func errorResponse(for error: any Error, request: APIRequest) -> APIResponse {
    switch error {
    case let error as APIError: error.response
    case let error as ServiceError: error.response(to: request)
    default: APIError.unavailable("node is not running (\(error))").response
    }
  }
}

extension APIResponse {
  /// A write's answer: `Idempotent-Replayed: true` when it is the result of an earlier request with
  /// the same key.
  static func written(_ body: [UInt8], replayed: Bool) -> APIResponse {
    var response = APIResponse.json(.ok, body)
    if replayed { response.headers.add(name: "Idempotent-Replayed", value: "true") }
    return response
  }
}
