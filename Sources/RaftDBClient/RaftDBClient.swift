import Foundation
import JSON
import NIOCore
import NIOHTTP1
import NIOPosix
// Clients of this library use its read levels and address parsing without importing the module
// that defines them for the server too.
@_exported import RaftDBAPI

public enum RaftDBClientError: Error, Sendable, CustomStringConvertible {
  /// The server answered with an error status and `{"error": ...}`.
  case server(status: Int, message: String)
  /// No endpoint could be reached or none answered before the deadline.
  case unavailable(String)
  case badResponse(String)

  public var description: String {
    switch self {
    case .server(let status, let message): "HTTP \(status): \(message)"
    case .unavailable(let why): "cluster unavailable: \(why)"
    case .badResponse(let why): "unexpected response: \(why)"
    }
  }

  public var status: Int? {
    if case .server(let status, _) = self { return status }
    return nil
  }
}

/// The raftdb client: talks to any member, follows 307 redirects to the leader, moves on to the next
/// endpoint when one is down, retries while the cluster has no leader, and gives every write an
/// Idempotency-Key so that a retry can never apply it twice (lesson 19).
public actor RaftDBClient {
  public struct Options: Sendable {
    /// Give up on a request after this long (`raftctl --timeout`). A request that every endpoint
    /// refuses fails at once instead.
    public var deadline: Duration = .seconds(15)
    public var requestTimeout: TimeAmount = .seconds(10)
    public var maxRedirects = 8
    /// Told, before each pause, what went wrong and that the client is about to retry (raftctl
    /// prints it to stderr, so that a wait for a leader is not silent).
    public var onRetry: (@Sendable (String) -> Void)?
    public init() {}
  }

  private var endpoints: [String]
  private var preferred = 0
  private var connections: [String: HTTPConnection] = [:]
  private let group: any EventLoopGroup
  private let options: Options

  /// `endpoints` are the HTTP addresses of any members, as "host:port" or "http://host:port"
  /// (see `endpointHostPort(_:)`).
  public init(
    endpoints: [String], group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
    options: Options = Options()
  ) {
    precondition(!endpoints.isEmpty, "at least one endpoint")
    // An endpoint that is not an address stays as given, so that its requests fail naming it.
    self.endpoints = endpoints.map { endpointHostPort($0) ?? $0 }
    self.group = group
    self.options = options
  }

  // MARK: Key-value operations

  /// Sets every pair in one atomic write; returns the revision.
  @discardableResult
  public func put(_ pairs: [String: String], idempotencyKey: String = UUID().uuidString) async throws
    -> UInt64
  {
    let body = JSONValue.object(
      pairs.sorted { $0.key < $1.key }.map { (key: $0.key, value: .string($0.value)) })
    let response = try await call(.POST, "/key", json: body, idempotencyKey: idempotencyKey)
    return response["revision"]?.uint64Value ?? 0
  }

  /// The value of `key`, or nil when it is absent.
  public func get(_ key: String, level: ReadLevel = .default) async throws -> String? {
    do {
      let response = try await call(.GET, "/key/\(escape(key))?level=\(level.rawValue)")
      return response[key]?.stringValue
    } catch RaftDBClientError.server(404, _) {
      return nil
    }
  }

  /// Deletes `key`; returns whether it existed, and the store's revision after the delete.
  @discardableResult
  public func delete(_ key: String, idempotencyKey: String = UUID().uuidString) async throws
    -> (existed: Bool, revision: UInt64)
  {
    let response = try await call(.DELETE, "/key/\(escape(key))", idempotencyKey: idempotencyKey)
    return (response["deleted"]?.boolValue ?? false, response["revision"]?.uint64Value ?? 0)
  }

  /// Atomically sets `key` to `value` if its current value is `expect` (nil: if absent).
  public func compareAndSet(
    _ key: String, expect: String?, value: String, idempotencyKey: String = UUID().uuidString
  ) async throws -> (succeeded: Bool, current: String?, revision: UInt64) {
    let body = JSONValue(["expect": JSONValue(expect), "value": JSONValue(value)])
    let response = try await call(
      .POST, "/key/\(escape(key))/cas", json: body, idempotencyKey: idempotencyKey)
    return (
      response["succeeded"]?.boolValue ?? false, response["value"]?.stringValue,
      response["revision"]?.uint64Value ?? 0
    )
  }

  // MARK: Multi-version operations (docs/API.md)

  /// `GET /key/{key}?...`: keys with their revisions, as the server's `{"kvs", "count", "more",
  /// "revision"}`; nil when a single key (no `prefix`) is absent. `revision` 0 reads the present.
  public func range(
    _ key: String, prefix: Bool = false, limit: Int = 0, revision: Int = 0, keysOnly: Bool = false,
    countOnly: Bool = false, level: ReadLevel = .default
  ) async throws -> JSONValue? {
    var query = ["level=\(level.rawValue)", prefix ? "prefix=true" : "meta=true"]
    if limit > 0 { query.append("limit=\(limit)") }
    if revision > 0 { query.append("revision=\(revision)") }
    if keysOnly { query.append("keys_only=true") }
    if countOnly { query.append("count_only=true") }
    do {
      return try await call(.GET, "/key/\(escape(key))?\(query.joined(separator: "&"))")
    } catch RaftDBClientError.server(404, _) where !prefix && !countOnly {
      return nil
    }
  }

  /// Sets every pair under lease `lease` in one revision (`POST /key?lease=ID`); returns the revision.
  @discardableResult
  public func put(_ pairs: [String: String], lease: Int) async throws -> UInt64 {
    let body = JSONValue.object(
      pairs.sorted { $0.key < $1.key }.map { (key: $0.key, value: .string($0.value)) })
    let response = try await call(.POST, "/key?lease=\(lease)", json: body)
    return response["revision"]?.uint64Value ?? 0
  }

  /// `POST /txn` with `transaction` (`{"compare", "success", "failure"}`); the server's
  /// `{"revision", "succeeded", "responses"}`.
  public func txn(_ transaction: JSONValue) async throws -> JSONValue {
    try await call(.POST, "/txn", json: transaction)
  }

  /// Grants a lease of `ttl` seconds (`id` 0: the leader chooses); the server's `{"id", "ttl",
  /// "revision"}`.
  public func grantLease(ttl: Int, id: Int = 0) async throws -> JSONValue {
    var members: [(key: String, value: JSONValue)] = [("ttl", JSONValue(ttl))]
    if id != 0 { members.append(("id", JSONValue(id))) }
    return try await call(.POST, "/lease", json: .object(members))
  }

  /// Renews lease `id` once; the server's `{"id", "ttl"}` (a 404 once it has expired).
  public func keepAliveLease(_ id: Int) async throws -> JSONValue {
    try await call(.POST, "/lease/\(id)/keepalive")
  }

  /// Lease `id`'s `{"id", "granted_ttl", "ttl", "keys"}`, or nil when it does not exist (expired or
  /// revoked).
  public func leaseTimeToLive(_ id: Int) async throws -> JSONValue? {
    do {
      return try await call(.GET, "/lease/\(id)")
    } catch RaftDBClientError.server(404, _) {
      return nil
    }
  }

  /// Revokes lease `id`, deleting its keys; the server's `{"deleted", "revision"}`.
  public func revokeLease(_ id: Int) async throws -> JSONValue {
    try await call(.DELETE, "/lease/\(id)")
  }

  /// The ids of the live leases (`GET /lease`).
  public func leases() async throws -> [Int] {
    let answer = try await call(.GET, "/lease")
    guard let ids = answer["leases"]?.arrayValue else {
      throw RaftDBClientError.badResponse("no leases in \(answer)")
    }
    return ids.compactMap(\.intValue)
  }

  // MARK: Cluster operations

  /// A node's `/status`: of `endpoint` exactly, or of whichever member answers.
  public func status(endpoint: String? = nil) async throws -> NodeStatus {
    let response = try await statusResponse(endpoint: endpoint)
    return try NodeStatus(json: try decodeObject(response))
  }

  /// The raw `/status` JSON.
  public func statusJSON(endpoint: String? = nil) async throws -> String {
    let response = try await statusResponse(endpoint: endpoint)
    _ = try decodeObject(response)
    return response.bodyText
  }

  private func statusResponse(endpoint: String?) async throws -> HTTPResponseData {
    let request = HTTPRequestData(method: .GET, path: "/status")
    if let endpoint { return try await send(request, to: endpointHostPort(endpoint) ?? endpoint) }
    return try await perform(request)
  }

  /// Asks the cluster to add a member. `memberID` (16 hex digits) is the id the new node chose for
  /// itself; without it the leader uses the legacy id derived from the name.
  public func join(
    id: String, raftAddress: String, httpAddress: String, voter: Bool = true, memberID: String? = nil
  ) async throws {
    var members: [(key: String, value: JSONValue)] = [
      ("addr", JSONValue(raftAddress)), ("haddr", JSONValue(httpAddress)), ("id", JSONValue(id)),
    ]
    if let memberID { members.append(("member_id", JSONValue(memberID))) }
    members.append(("voter", JSONValue(voter)))
    _ = try await call(.POST, "/join", json: .object(members))
  }

  public func remove(id: String) async throws {
    _ = try await call(.POST, "/remove", json: JSONValue(["id": JSONValue(id)]))
  }

  /// Hands leadership to the member named `id` (nil: the most caught-up voter); returns the new
  /// leader's name once it has taken over.
  public func transferLeadership(to id: String?) async throws -> String {
    let answer = try await call(.POST, "/transfer", json: id.map { JSONValue(["id": JSONValue($0)]) })
    guard let leader = answer["leader"]?.stringValue else {
      throw RaftDBClientError.badResponse("no leader in \(answer)")
    }
    return leader
  }

  public func close() async {
    for connection in connections.values { await connection.close() }
    connections = [:]
  }

  // MARK: Plumbing

  private func call(
    _ method: HTTPMethod, _ path: String, json: JSONValue? = nil, idempotencyKey: String? = nil
  ) async throws -> JSONValue {
    var headers: [(String, String)] = [("Accept", "application/json")]
    var body: [UInt8] = []
    if let json {
      body = json.serialized()
      headers.append(("Content-Type", "application/json"))
    }
    if let idempotencyKey { headers.append(("Idempotency-Key", idempotencyKey)) }
    let response = try await perform(
      HTTPRequestData(method: method, path: path, headers: headers, body: body))
    return try decodeObject(response)
  }

  /// The body of a 2xx response, which must be a JSON object; any other status is thrown as
  /// `.server` with the body's `{"error": ...}` (or its text).
  private func decodeObject(_ response: HTTPResponseData) throws -> JSONValue {
    let object = try? JSONParser.parse(response.body)
    guard (200..<300).contains(Int(response.status.code)) else {
      let message = object?["error"]?.stringValue ?? response.bodyText
      throw RaftDBClientError.server(status: Int(response.status.code), message: message)
    }
    guard let object, case .object = object else {
      throw RaftDBClientError.badResponse("not a JSON object: \(response.bodyText)")
    }
    return object
  }

  /// Sends `request` to the cluster: redirects followed, unreachable endpoints skipped, "no leader"
  /// answers retried with back-off, all within the deadline. When every endpoint has refused the
  /// connection (or cannot be resolved) since the last answer, it fails at once: nothing listens,
  /// and waiting out the deadline would only hide that.
  public func perform(_ request: HTTPRequestData) async throws -> HTTPResponseData {
    let deadline = ContinuousClock.now + options.deadline
    var backoff = Duration.milliseconds(50)
    var lastProblem = "no attempt made"
    var target = endpoints[preferred]
    var path = request.path
    var redirects = 0
    // Endpoints that refused since the last answer, with why, in the order they were tried.
    var refused: [(endpoint: String, why: String)] = []
    func retry(_ problem: String) async throws {
      lastProblem = problem
      preferred = (endpoints.firstIndex(of: target).map { $0 + 1 } ?? preferred + 1) % endpoints.count
      target = endpoints[preferred]
      path = request.path
      let pause = min(backoff, deadline - ContinuousClock.now)
      guard pause > .zero else { return }
      options.onRetry?("\(problem); retrying")
      try await Task.sleep(for: pause)
      backoff = min(backoff * 2, .seconds(1))
    }
    while ContinuousClock.now < deadline {
      var attempt = request
      attempt.path = path
      let response: HTTPResponseData
      do {
        response = try await send(attempt, to: target)
      } catch {
        let failure = ConnectionFailure(error)
        if failure.isPermanent {
          if !refused.contains(where: { $0.endpoint == target }) { refused.append((target, failure.text)) }
          if endpoints.allSatisfy({ endpoint in refused.contains { $0.endpoint == endpoint } }) {
            throw RaftDBClientError.unavailable(Self.describe(refused))
          }
          // Another endpoint may answer: no pause before asking it.
          lastProblem = "\(target): \(failure.text)"
          preferred = (endpoints.firstIndex(of: target).map { $0 + 1 } ?? preferred + 1) % endpoints.count
          target = endpoints[preferred]
          path = request.path
          continue
        }
        try await retry("\(target): \(failure.text)")
        continue
      }
      refused = []
      switch response.status.code {
      case 307, 308:
        guard redirects < options.maxRedirects, let location = response.headers.first(name: "Location"),
          let (host, newPath) = splitURL(location)
        else { return response }
        redirects += 1
        target = host
        path = newPath
        if !endpoints.contains(host) { endpoints.append(host) }
        preferred = endpoints.firstIndex(of: host)!
      case 503:
        // This member knows no leader (it may be partitioned away, or no longer a member): ask the
        // next one, after a pause that grows while the whole cluster has none.
        let why = (try? JSONParser.parse(response.body))?["error"]?.stringValue ?? response.bodyText
        try await retry("\(target): \(why)")
      default:
        return response
      }
    }
    throw RaftDBClientError.unavailable("gave up after \(options.deadline): \(lastProblem)")
  }

  /// "cannot reach 127.0.0.1:8091: connection refused; tried 127.0.0.1:8092, 127.0.0.1:8093": one
  /// line for the operator, the first endpoint's reason and every other one tried (with its own
  /// reason where it differs).
  static func describe(_ refused: [(endpoint: String, why: String)]) -> String {
    guard let first = refused.first else { return "no endpoint tried" }
    var text = "cannot reach \(first.endpoint): \(first.why)"
    let others = refused.dropFirst().map { $0.why == first.why ? $0.endpoint : "\($0.endpoint) (\($0.why))" }
    if !others.isEmpty { text += "; tried \(others.joined(separator: ", "))" }
    return text
  }

  private func send(_ request: HTTPRequestData, to endpoint: String) async throws -> HTTPResponseData {
    let connection: HTTPConnection
    if let open = connections[endpoint], open.isOpen {
      connection = open
    } else {
      guard let (host, port) = splitHostPort(endpoint) else {
        throw RaftDBClientError.unavailable("bad endpoint \(endpoint)")
      }
      connection = try await HTTPConnection.connect(host: host, port: port, group: group)
      connections[endpoint] = connection
    }
    do {
      return try await connection.send(request, timeout: options.requestTimeout)
    } catch {
      connections[endpoint] = nil
      await connection.close()
      throw error
    }
  }

  private func escape(_ key: String) -> String {
    key.addingPercentEncoding(
      withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#")))
      ?? key
  }
}

/// `GET /status`, as documented in docs/API.md.
public struct NodeStatus: Sendable {
  public struct Member: Sendable, Hashable {
    public var id: String
    public var raddr: String
    public var haddr: String
    public var voter: Bool?
    /// 16 hex digits; nil from a server of a build before member ids.
    public var memberID: String?

    init(json: JSONValue) throws {
      id = try NodeStatus.field("id", of: json, \.stringValue)
      raddr = try NodeStatus.field("raddr", of: json, \.stringValue)
      haddr = try NodeStatus.field("haddr", of: json, \.stringValue)
      voter = json["voter"]?.boolValue
      memberID = json["member_id"]?.stringValue
    }
  }

  public var id: String
  public var state: String
  public var term: UInt64
  public var leader: Member?
  public var commitIndex: UInt64
  public var appliedIndex: UInt64
  public var lastLogIndex: UInt64
  public var snapshotIndex: UInt64
  public var keys: Int?
  public var members: [Member]
  /// This node's member id and its cluster's id, 16 hex digits each (all zeros: no cluster id);
  /// nil from a server of a build before them.
  public var memberID: String?
  public var clusterID: String?

  /// Reads the fields above from a `/status` body; members it does not know are ignored.
  public init(json: JSONValue) throws {
    id = try Self.field("id", of: json, \.stringValue)
    state = try Self.field("state", of: json, \.stringValue)
    term = try Self.field("term", of: json, \.uint64Value)
    leader = try json["leader"].flatMap { $0.isNull ? nil : try Member(json: $0) }
    commitIndex = try Self.field("commit_index", of: json, \.uint64Value)
    appliedIndex = try Self.field("applied_index", of: json, \.uint64Value)
    lastLogIndex = try Self.field("last_log_index", of: json, \.uint64Value)
    snapshotIndex = try Self.field("snapshot_index", of: json, \.uint64Value)
    keys = json["keys"]?.intValue
    members = try Self.field("members", of: json, \.arrayValue).map(Member.init(json:))
    memberID = json["member_id"]?.stringValue
    clusterID = json["cluster_id"]?.stringValue
  }

  /// The member `name` of `object`, read with `read`; missing or of another type is a bad response.
  static func field<T>(_ name: String, of object: JSONValue, _ read: (JSONValue) -> T?) throws -> T {
    guard let value = object[name].flatMap(read) else {
      let text = String(decoding: object.serialized(), as: UTF8.self)
      throw RaftDBClientError.badResponse("status: no \(name) of the expected type in \(text)")
    }
    return value
  }
}

/// "http://host:port/path?query" → ("host:port", "/path?query").
func splitURL(_ url: String) -> (String, String)? {
  var rest = Substring(url)
  if rest.hasPrefix("http://") { rest = rest.dropFirst(7) } else { return nil }
  guard let slash = rest.firstIndex(of: "/") else { return (String(rest), "/") }
  return (String(rest[..<slash]), String(rest[slash...]))
}
