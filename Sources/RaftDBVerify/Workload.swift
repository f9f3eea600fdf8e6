import Foundation
import JSON
import Linearizability
import NIOCore
import NIOHTTP1
import Raft
import RaftDBAPI
import RaftDBClient

/// What the clients do.
public struct WorkloadOptions: Sendable {
  public var clients = 8
  public var keys = 5
  /// `consistent`, `default` or `stale`.
  public var readLevel = "consistent"
  /// Send every request to a random node instead of following redirects to the leader (with `stale`
  /// reads this reads followers, which is what the negative run needs).
  public var readFromAnyNode = false
  /// Relative weights of reads, writes, compare-and-sets and deletes.
  public var mix = (read: 50, write: 30, cas: 15, delete: 5)
  public var requestTimeout: TimeAmount = .seconds(2)
  /// How many times a write of unknown outcome is retried with its Idempotency-Key.
  public var retries = 2
  /// Percentage of operations sent through the multi-version store's routes instead of the
  /// course's: reads as `GET /key/{k}?meta=true`, writes, deletes and compare-and-sets as `POST /txn`
  /// (a compare on the value, or on create revision 0 for "absent"). Transactions carry no
  /// idempotency key, so one of unknown outcome is recorded as unknown rather than retried.
  public var multiVersionPercent = 0
  public init() {}
}

/// Collects operations from all clients.
final class HistoryRecorder: @unchecked Sendable {
  // Unchecked: everything is behind `lock`.
  private let lock = NSLock()
  private var operations: [Linearizability.Operation] = []
  private var nextID = 0

  func record(
    process: Int, key: String, call: Call, invokedAt: UInt64, completedAt: UInt64?, outcome: Outcome
  ) {
    lock.withLock {
      operations.append(
        Linearizability.Operation(
          id: nextID, process: process, key: key, call: call, invokedAt: invokedAt, completedAt: completedAt,
          outcome: outcome))
      nextID += 1
    }
  }

  var history: History { lock.withLock { History(operations) } }
  /// Operations recorded so far, for progress lines.
  var count: Int { lock.withLock { operations.count } }
}

/// The shared monotonic clock every client stamps operations with.
func monotonicNanoseconds() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// One simulated client: its own connections, its own random stream, one operation at a time.
final class WorkloadClient: @unchecked Sendable {
  // Unchecked: each client is driven by exactly one task.
  let process: Int
  private let cluster: VerifyCluster
  private let options: WorkloadOptions
  private let recorder: HistoryRecorder
  private let group: any EventLoopGroup
  private var rng: SplitMix64
  private var connections: [String: HTTPConnection] = [:]
  private var preferred: String?
  private var lastSeen: [String: String?] = [:]
  private var sequence = 0
  private let runTag: String

  init(
    process: Int, cluster: VerifyCluster, options: WorkloadOptions, recorder: HistoryRecorder,
    group: any EventLoopGroup, seed: UInt64
  ) {
    self.process = process
    self.cluster = cluster
    self.options = options
    self.recorder = recorder
    self.group = group
    rng = SplitMix64(seed: seed &+ UInt64(process) &* 0x9E37_79B9)
    runTag = String(seed, radix: 36)
  }

  func run(until deadline: ContinuousClock.Instant) async {
    while ContinuousClock.now < deadline {
      let key = "k\(rng.next() % UInt64(options.keys))"
      let total = UInt64(options.mix.read + options.mix.write + options.mix.cas + options.mix.delete)
      let roll = Int(rng.next() % total)
      sequence += 1
      let value = "c\(process)-\(sequence)"
      let call: Call
      if roll < options.mix.read {
        call = .read
      } else if roll < options.mix.read + options.mix.write {
        call = .write(value)
      } else if roll < options.mix.read + options.mix.write + options.mix.cas {
        call = .cas(expected: lastSeen[key] ?? nil, new: value)
      } else {
        call = .delete
      }
      await perform(call, key: key)
    }
    for connection in connections.values { await connection.close() }
  }

  /// A final read of `key` after healing, at `consistent` level, through the leader.
  func finalRead(_ key: String) async {
    await perform(.read, key: key, level: "consistent", followLeader: true)
  }

  private enum Attempt {
    case ok(Response)
    /// Not applied: rejected before it was proposed.
    case notApplied
    /// May or may not have been applied.
    case indeterminate
  }

  private func perform(_ call: Call, key: String, level: String? = nil, followLeader: Bool? = nil) async {
    let invokedAt = monotonicNanoseconds()
    let idempotencyKey = "\(runTag)-\(process)-\(sequence)"
    let viaStore = rng.next() % 100 < UInt64(options.multiVersionPercent)
    var attempt = await send(
      call, key: key, idempotencyKey: idempotencyKey, level: level, followLeader: followLeader,
      viaStore: viaStore)
    if case .read = call {
      switch attempt {
      case .ok(let response):
        if case .value(let value) = response { lastSeen[key] = value }
        recorder.record(
          process: process, key: key, call: call, invokedAt: invokedAt, completedAt: monotonicNanoseconds(),
          outcome: .ok(response))
      case .notApplied, .indeterminate:
        recorder.record(
          process: process, key: key, call: call, invokedAt: invokedAt, completedAt: monotonicNanoseconds(),
          outcome: .failed)
        await backOff()
      }
      return
    }
    var everIndeterminate = false
    var retries = 0
    while true {
      switch attempt {
      case .ok(let response):
        noteWritten(call, key: key, response: response)
        recorder.record(
          process: process, key: key, call: call, invokedAt: invokedAt, completedAt: monotonicNanoseconds(),
          outcome: .ok(response))
        return
      case .notApplied where !everIndeterminate:
        recorder.record(
          process: process, key: key, call: call, invokedAt: invokedAt, completedAt: monotonicNanoseconds(),
          outcome: .failed)
        await backOff()
        return
      case .notApplied, .indeterminate:
        if case .indeterminate = attempt { everIndeterminate = true }
        guard retries < options.retries, !(viaStore && everIndeterminate) else {
          recorder.record(
            process: process, key: key, call: call, invokedAt: invokedAt, completedAt: nil, outcome: .unknown)
          lastSeen.removeValue(forKey: key)
          return
        }
        retries += 1
        try? await Task.sleep(for: .milliseconds(200 + Int(rng.next() % 300)))
        // The same Idempotency-Key: if the first attempt applied, this returns its result.
        attempt = await send(
          call, key: key, idempotencyKey: idempotencyKey, level: level, followLeader: followLeader,
          viaStore: viaStore)
      }
    }
  }

  /// A pause after a failure: while the cluster (or every node) is down, clients must not spin.
  private func backOff() async {
    try? await Task.sleep(for: .milliseconds(20 + Int(rng.next() % 80)))
  }

  private func noteWritten(_ call: Call, key: String, response: Response) {
    switch (call, response) {
    case (.write(let value), _): lastSeen[key] = .some(value)
    case (.delete, _): lastSeen[key] = .some(nil)
    case (.cas(_, let new), .cas(true)): lastSeen[key] = .some(new)
    default: lastSeen.removeValue(forKey: key)
    }
  }

  /// One attempt, following up to a few redirects.
  private func send(
    _ call: Call, key: String, idempotencyKey: String, level: String?, followLeader: Bool?, viaStore: Bool
  ) async -> Attempt {
    let readLevel = level ?? options.readLevel
    let anyNode = !(followLeader ?? !options.readFromAnyNode)
    var request: HTTPRequestData
    switch call {
    case .read:
      request = HTTPRequestData(method: .GET, path: "/key/\(key)?level=\(readLevel)")
    case .write(let value):
      request = HTTPRequestData(
        method: .POST, path: "/key", body: JSONValue([key: JSONValue(value)]).serialized())
    case .delete:
      request = HTTPRequestData(method: .DELETE, path: "/key/\(key)")
    case .cas(let expected, let new):
      request = HTTPRequestData(
        method: .POST, path: "/key/\(key)/cas",
        body: JSONValue(["expect": JSONValue(expected), "value": JSONValue(new)]).serialized())
    }
    if viaStore {
      request = Self.storeRequest(call, key: key, level: readLevel)
    } else if case .read = call {
    } else {
      request.headers.append(("Idempotency-Key", idempotencyKey))
    }
    let running = cluster.specs.filter { cluster.isRunning($0.name) }.map(\.http)
    guard !running.isEmpty else { return .notApplied }
    var target =
      anyNode
      ? running[Int(rng.next() % UInt64(running.count))]
      : (preferred ?? running[Int(rng.next() % UInt64(running.count))])
    for _ in 0..<4 {
      let open: HTTPConnection
      do {
        open = try await connection(to: target)
      } catch {
        // Never sent.
        if !anyNode { preferred = nil }
        return .notApplied
      }
      let response: HTTPResponseData
      do {
        response = try await open.send(request, timeout: options.requestTimeout)
      } catch {
        connections[target] = nil
        if !anyNode { preferred = nil }
        // The request may have reached the server before the connection broke or timed out.
        return .indeterminate
      }
      switch response.status.code {
      case 200:
        if !anyNode { preferred = target }
        return .ok(viaStore ? Self.parseStore(call, response) : parse(call, key: key, response))
      case 404 where call == .read:
        if !anyNode { preferred = target }
        return .ok(.value(nil))
      case 307:
        guard let location = response.headers.first(name: "Location"), let next = hostPort(of: location)
        else {
          return .notApplied
        }
        target = next
      case 503:
        if !anyNode { preferred = nil }
        return response.headers.first(name: "X-Raftdb-Outcome") == "unknown" ? .indeterminate : .notApplied
      default:
        return .notApplied
      }
    }
    return .notApplied
  }

  /// The same operation on the multi-version store's routes.
  static func storeRequest(_ call: Call, key: String, level: String) -> HTTPRequestData {
    func txn(_ compare: [JSONValue], _ operation: JSONValue) -> HTTPRequestData {
      let body = JSONValue(["compare": .array(compare), "success": .array([operation])])
      return HTTPRequestData(method: .POST, path: "/txn", body: body.serialized())
    }
    func put(_ value: String) -> JSONValue {
      JSONValue(["put": JSONValue(["key": JSONValue(key), "value": JSONValue(value)])])
    }
    switch call {
    case .read:
      return HTTPRequestData(method: .GET, path: "/key/\(key)?meta=true&level=\(level)")
    case .write(let value):
      return txn([], put(value))
    case .delete:
      return txn([], JSONValue(["delete": JSONValue(["key": JSONValue(key)])]))
    case .cas(let expected, let new):
      let compare =
        if let expected {
          JSONValue([
            "key": JSONValue(key), "target": JSONValue("value"), "result": JSONValue("="),
            "value": JSONValue(expected),
          ])
        } else {
          JSONValue([
            "key": JSONValue(key), "target": JSONValue("create"), "result": JSONValue("="),
            "value": JSONValue(0),
          ])
        }
      return txn([compare], put(new))
    }
  }

  static func parseStore(_ call: Call, _ response: HTTPResponseData) -> Response {
    let object = try? JSONParser.parse(response.body)
    switch call {
    case .read: return .value(object?["kvs"]?[0]?["value"]?.stringValue)
    case .cas: return .cas(succeeded: object?["succeeded"]?.boolValue ?? false)
    case .write, .delete: return .done
    }
  }

  private func parse(_ call: Call, key: String, _ response: HTTPResponseData) -> Response {
    let object = try? JSONParser.parse(response.body)
    switch call {
    case .read: return .value(object?[key]?.stringValue)
    case .cas: return .cas(succeeded: object?["succeeded"]?.boolValue ?? false)
    case .write, .delete: return .done
    }
  }

  private func connection(to endpoint: String) async throws -> HTTPConnection {
    if let open = connections[endpoint], open.isOpen { return open }
    guard let (host, port) = splitHostPort(endpoint) else { throw VerifyError("bad endpoint \(endpoint)") }
    let connection = try await HTTPConnection.connect(
      host: host, port: port, group: group, connectTimeout: .milliseconds(500))
    connections[endpoint] = connection
    return connection
  }

  private func hostPort(of url: String) -> String? {
    guard url.hasPrefix("http://") else { return nil }
    let rest = url.dropFirst(7)
    return String(rest[..<(rest.firstIndex(of: "/") ?? rest.endIndex)])
  }
}
