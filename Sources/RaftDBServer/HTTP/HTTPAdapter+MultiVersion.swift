import JSON
import KVStore
import NIOCore
import NIOHTTP1
import RaftDBAPI
import RaftDBService

/// The multi-version routes (docs/API.md): ranges and reads of the past on `GET /key/...`, puts
/// under a lease, `POST /txn`, `/lease` and `POST /compact`. Keys and values are JSON strings
/// (UTF-8); revisions, versions and lease ids are JSON numbers (a chosen lease id stays below 2^53).
extension HTTPAdapter {
  static let rangeParameters: Set<Substring> = [
    "level", "prefix", "from_key", "limit", "revision", "meta", "keys_only", "count_only",
  ]

  /// Whether a `GET /key/...` asks for the multi-version shape rather than the course's.
  static func wantsRange(_ request: APIRequest) -> Bool {
    request.queryParameterNames.contains { $0 != "level" }
  }

  /// `GET /key/{key}?prefix=true&limit=N&revision=R&meta=true...`: keys with their revisions, as
  /// `{"kvs": [...], "count", "more", "revision"}`. A single key that does not exist is a 404.
  func range(_ rawKey: Substring, _ request: APIRequest, on eventLoop: any EventLoop) throws
    -> EventLoopFuture<APIResponse>
  {
    try request.requireOnlyQueryParameters(Self.rangeParameters)
    let key = Array(try decodeKey(rawKey).utf8)
    let levelParameter = request.queryParameter("level")
    guard let level = ReadLevel(parameter: levelParameter) else {
      throw APIError.badRequest("unknown read level \"\(levelParameter ?? "")\"")
    }
    let prefix = try flag(request, "prefix")
    let fromKey = try flag(request, "from_key")
    var range = RangeRequest(
      range: prefix ? .prefix(key) : (fromKey ? KeyRange(key: key, rangeEnd: [0]) : KeyRange(key: key)))
    range.limit = try number(request, "limit") ?? 0
    range.revision = try number(request, "revision") ?? 0
    range.keysOnly = try flag(request, "keys_only")
    range.countOnly = try flag(request, "count_only")
    let single = !prefix && !fromKey && !range.countOnly
    return service.range(range, level: level, on: eventLoop).flatMapThrowing { result in
      if single && result.response.kvs.isEmpty {
        throw ServiceError.notFound("key \"\(String(decoding: key, as: UTF8.self))\" not found")
      }
      var writer = JSONWriter()
      writer.beginObject()
      writer.key("kvs")
      Self.write(result.response.kvs, to: &writer)
      writer.field("count", Int(result.response.count))
      writer.field("more", result.response.more)
      writer.field("revision", Int(result.revision))
      writer.endObject()
      var response = APIResponse.json(.ok, writer.bytes)
      response.headers.add(name: "X-Raftdb-Revision", value: String(result.revision))
      return response
    }
  }

  /// `POST /key?lease=ID` or `?ttl=SECONDS` (a new lease, granted first), and `PUT /key/{key}?...`
  /// with the value as the body: puts attached to a lease, in one revision.
  func putUnderLease(_ pairs: [KeyValue], _ request: APIRequest, on eventLoop: any EventLoop) throws
    -> EventLoopFuture<APIResponse>
  {
    try request.requireOnlyQueryParameters(["lease", "ttl", "prev_kv"])
    let lease = try number(request, "lease")
    let ttl = try number(request, "ttl")
    guard (lease == nil) != (ttl == nil) else {
      throw APIError.badRequest("give either lease=ID or ttl=SECONDS, not both")
    }
    let prevKV = try flag(request, "prev_kv")
    let granted: EventLoopFuture<Int64> =
      if let lease { eventLoop.makeSucceededFuture(lease) } else {
        service.grantLease(ttl: ttl!, id: 0, on: eventLoop).map(\.id)
      }
    return granted.flatMap { lease in
      var puts: [RequestOp] = []
      for pair in pairs {
        var put = PutRequest(key: Array(pair.key.utf8), value: Array(pair.value.utf8), lease: lease)
        put.prevKV = prevKV
        puts.append(.put(put))
      }
      return self.service.txn(TxnRequest(success: puts), on: eventLoop).map { result in
        var writer = JSONWriter()
        writer.beginObject()
        writer.field("revision", result.revision)
        writer.field("lease", Int(lease))
        if prevKV {
          writer.key("prev_kvs")
          let previous = result.response.responses.compactMap { response -> MVCCKeyValue? in
            if case .put(let put) = response { return put.prevKV }
            return nil
          }
          Self.write(previous, to: &writer)
        }
        writer.endObject()
        return APIResponse.json(.ok, writer.bytes)
      }
    }
  }

  /// `PUT /key/{key}`: the body is the value.
  func putOne(_ rawKey: Substring, _ request: APIRequest, on eventLoop: any EventLoop) throws
    -> EventLoopFuture<APIResponse>
  {
    let key = try decodeKey(rawKey)
    guard
      let value = String(validating: request.body.map { Array($0.readableBytesView) } ?? [], as: UTF8.self)
    else { throw APIError.badRequest("the value must be UTF-8 text") }
    if request.queryParameterNames.isEmpty {
      return service.put(
        [KeyValue(key: key, value: value)], idempotencyKey: idempotencyKey(request), on: eventLoop
      )
      .map { result in
        var writer = JSONWriter()
        writer.beginObject()
        writer.field("revision", result.revision)
        writer.endObject()
        return .written(writer.bytes, replayed: result.replayed)
      }
    }
    return try putUnderLease([KeyValue(key: key, value: value)], request, on: eventLoop)
  }

  // MARK: Transactions and compaction

  /// `POST /txn {"compare": [...], "success": [...], "failure": [...]}` (docs/API.md has the shape).
  func txn(_ request: APIRequest, on eventLoop: any EventLoop) throws -> EventLoopFuture<APIResponse> {
    try request.requireOnlyQueryParameters([])
    let txn = try TxnJSON.decode(try readJSON(request), depth: 1)
    return service.txn(txn, on: eventLoop).map { result in
      var writer = JSONWriter()
      writer.beginObject()
      writer.field("revision", result.revision)
      TxnJSON.write(result.response, to: &writer)
      writer.endObject()
      return APIResponse.json(.ok, writer.bytes)
    }
  }

  /// `POST /compact {"revision": N}`.
  func compact(_ request: APIRequest, on eventLoop: any EventLoop) throws -> EventLoopFuture<APIResponse> {
    try request.requireOnlyQueryParameters([])
    guard case .object(let members) = try readJSON(request), members.count == 1, members[0].key == "revision",
      case .number(let text) = members[0].value, let revision = Int64(text)
    else { throw APIError.badRequest("body must be {\"revision\": N}") }
    return service.compact(revision: revision, on: eventLoop).map { revision in
      var writer = JSONWriter()
      writer.beginObject()
      writer.field("revision", revision)
      writer.endObject()
      return APIResponse.json(.ok, writer.bytes)
    }
  }

  // MARK: Leases

  /// `/lease` routes: `POST /lease {"ttl": S, "id": N?}` grants, `GET /lease` lists,
  /// `GET /lease/{id}` tells the TTL and keys, `POST /lease/{id}/keepalive` renews,
  /// `DELETE /lease/{id}` revokes.
  func lease(_ rest: Substring, _ request: APIRequest, on eventLoop: any EventLoop) throws
    -> EventLoopFuture<APIResponse>
  {
    try request.requireOnlyQueryParameters([])
    let method = request.head.method
    if rest.isEmpty {
      switch method {
      case .POST: return try grantLease(request, on: eventLoop)
      case .GET:
        var writer = JSONWriter()
        writer.beginObject()
        writer.key("leases")
        writer.beginArray()
        for id in service.leases() { writer.number(Int(id)) }
        writer.endArray()
        writer.endObject()
        return eventLoop.makeSucceededFuture(.json(.ok, writer.bytes))
      default: throw APIError.methodNotAllowed("method not allowed; use GET or POST", allowed: "GET, POST")
      }
    }
    let keepAlive = rest.hasSuffix("/keepalive")
    guard let id = Int64(keepAlive ? rest.dropLast(10) : rest), id > 0 else {
      throw APIError.badRequest("a lease id is a positive decimal number")
    }
    switch (method, keepAlive) {
    case (.POST, true):
      return service.keepAlive(lease: id, on: eventLoop).map { ttl in
        var writer = JSONWriter()
        writer.beginObject()
        writer.field("id", Int(id))
        writer.field("ttl", Int(ttl))
        writer.endObject()
        return APIResponse.json(.ok, writer.bytes)
      }
    case (.GET, false):
      return service.timeToLive(lease: id, on: eventLoop).map { status in
        var writer = JSONWriter()
        writer.beginObject()
        writer.field("id", Int(id))
        writer.field("granted_ttl", Int(status.grantedTTL))
        writer.field("ttl", Int(status.remainingTTL))
        writer.key("keys")
        writer.beginArray()
        for key in status.keys { writer.string(String(decoding: key, as: UTF8.self)) }
        writer.endArray()
        writer.endObject()
        return APIResponse.json(.ok, writer.bytes)
      }
    case (.DELETE, false):
      return service.revokeLease(id: id, on: eventLoop).map { result in
        var writer = JSONWriter()
        writer.beginObject()
        writer.field("deleted", Int(result.deleted))
        writer.field("revision", result.revision)
        writer.endObject()
        return APIResponse.json(.ok, writer.bytes)
      }
    default:
      let allowed = keepAlive ? "POST" : "GET, DELETE"
      throw APIError.methodNotAllowed("method not allowed; use \(allowed)", allowed: allowed)
    }
  }

  private func grantLease(_ request: APIRequest, on eventLoop: any EventLoop) throws -> EventLoopFuture<
    APIResponse
  > {
    guard case .object(let members) = try readJSON(request) else {
      throw APIError.badRequest("body must be {\"ttl\": SECONDS, \"id\": N (optional)}")
    }
    var ttl: Int64?
    var id: Int64 = 0
    for (name, value) in members {
      guard case .number(let text) = value, let number = Int64(text) else {
        throw APIError.badRequest("\"\(name)\" must be an integer")
      }
      switch name {
      case "ttl": ttl = number
      case "id": id = number
      default: throw APIError.badRequest("unknown field \"\(name)\"; expected \"ttl\" and \"id\"")
      }
    }
    guard let ttl else { throw APIError.badRequest("missing \"ttl\" (seconds)") }
    return service.grantLease(ttl: ttl, id: id, on: eventLoop).map { grant in
      var writer = JSONWriter()
      writer.beginObject()
      writer.field("id", Int(grant.id))
      writer.field("ttl", Int(grant.ttl))
      writer.field("revision", grant.revision)
      writer.endObject()
      return APIResponse.json(.ok, writer.bytes)
    }
  }

  // MARK: Helpers

  static func write(_ kvs: [MVCCKeyValue], to writer: inout JSONWriter) {
    writer.beginArray()
    for kv in kvs { write(kv, to: &writer) }
    writer.endArray()
  }

  static func write(_ kv: MVCCKeyValue, to writer: inout JSONWriter) {
    writer.beginObject()
    writer.field("key", String(decoding: kv.key, as: UTF8.self))
    writer.field("value", String(decoding: kv.value, as: UTF8.self))
    writer.field("create_revision", Int(kv.createRevision))
    writer.field("mod_revision", Int(kv.modRevision))
    writer.field("version", Int(kv.version))
    writer.field("lease", Int(kv.lease))
    writer.endObject()
  }

  func flag(_ request: APIRequest, _ name: String) throws(APIError) -> Bool {
    switch request.queryParameter(name) {
    case nil, "false": return false
    case "", "true": return true
    case let other?: throw APIError.badRequest("\(name)=\(other): use true or false")
    }
  }

  func number(_ request: APIRequest, _ name: String) throws(APIError) -> Int64? {
    guard let text = request.queryParameter(name) else { return nil }
    guard let value = Int64(text), value >= 0 else {
      throw APIError.badRequest("\(name)=\(text): expected a non-negative integer")
    }
    return value
  }
}
