import Raft
import RaftDBAPI

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Which server speaks on the endpoints.
enum BenchTarget: String, CaseIterable {
  /// raftdb's HTTP/1.1 JSON API (docs/API.md).
  case raftdb
  /// etcd v3 through its gRPC-gateway JSON endpoints (`/v3/kv/...`): HTTP/1.1 JSON translated into an
  /// in-process gRPC call, so slower than etcd's native gRPC clients. Reported as such.
  case etcd
}

enum BenchOperation: String, CaseIterable {
  case put
  case get
  case cas
  /// Reads and writes in the proportion `--read-percent`.
  case mixed
  /// The cheapest request each server has (raftdb `GET /livez`, etcd `GET /version`): the HTTP
  /// floor of the server, with no Raft or state machine in it.
  case noop
  /// 256-byte request, 256-byte answer over raw loopback TCP to an echo server inside this process:
  /// the network floor with no HTTP at all. Ignores the target and endpoints.
  case echo
}

/// Everything a simulated client needs to know, fixed before the run starts.
struct BenchPlan: Sendable {
  var target: BenchTarget
  var operation: BenchOperation
  var level: ReadLevel
  var keySize: Int
  var valueSize: Int
  var keys: Int
  var readPercent: Int
  var seed: UInt64
  var clients: Int
  var idempotencyKeys: Bool
  /// Monotonic nanoseconds: operations that start before this are warm-up.
  var measureStart: UInt64
  /// Monotonic nanoseconds: no operation starts after this (duration mode).
  var measureEnd: UInt64
  /// Measured operations per client (requests mode), or nil in duration mode.
  var requestsPerClient: [Int]?
  /// Populate mode: each client writes its share of the key space once, in order, then stops.
  var populate: Bool
  var requestTimeoutNanos: UInt64
  /// Filler for values, alphanumeric so that JSON needs no escaping.
  var filler: [UInt8]
  /// Every key, built once so that requests do not format numbers (empty for huge key spaces).
  var keyTable: [[UInt8]] = []
}

/// The kind of the operation in flight, to classify its answer.
enum BenchOpKind {
  case read
  case write
  case cas(key: Int, newValue: [UInt8])
  case noop
  case echo
}

extension SplitMix64 {
  /// A number in `0..<bound` (modulo bias is negligible for key-space sizes).
  mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}

/// Monotonic time in nanoseconds, read the cheapest way the C library offers.
func benchNow() -> UInt64 {
  var time = timespec()
  clock_gettime(CLOCK_MONOTONIC, &time)
  return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

/// User plus system CPU seconds of this whole process.
func benchCPUSeconds() -> Double {
  var usage = rusage()
  #if os(Linux)
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
  #else
    getrusage(RUSAGE_SELF, &usage)
  #endif
  func seconds(_ value: timeval) -> Double { Double(value.tv_sec) + Double(value.tv_usec) / 1e6 }
  return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Builds requests into a reused scratch array, so that the hot path allocates only the socket buffer.
struct BenchRequestWriter {
  let plan: BenchPlan
  let hostHeader: [UInt8]
  var scratch: [UInt8] = []
  var body: [UInt8] = []
  var keyBytes: [UInt8] = []
  var encodedKey: [UInt8] = []

  init(plan: BenchPlan, host: String) {
    self.plan = plan
    hostHeader = Array(host.utf8)
    scratch.reserveCapacity(1024 + plan.valueSize * 2)
    body.reserveCapacity(512 + plan.valueSize * 2)
  }

  /// The key of index `index`, from the table when there is one.
  private func key(_ index: Int) -> [UInt8] {
    index < plan.keyTable.count ? plan.keyTable[index] : Self.key(index, size: plan.keySize)
  }

  /// The key of index `index`: "k" then zero-padded decimal digits, `keySize` bytes in all.
  static func key(_ index: Int, size: Int) -> [UInt8] {
    var digits = Array(String(index).utf8)
    let width = max(size - 1, digits.count)
    if digits.count < width {
      digits.insert(contentsOf: repeatElement(48, count: width - digits.count), at: 0)
    }
    return [107] + digits
  }

  /// A value unique to `stamp` (its first 8 bytes are `stamp` in hex), filled up to `valueSize`.
  static func value(stamp: UInt32, plan: BenchPlan) -> [UInt8] {
    var bytes = Array(plan.filler.prefix(plan.valueSize))
    Self.stamp(&bytes, with: stamp)
    return bytes
  }

  /// Writes `stamp` in hex over the first (up to 8) bytes of `value`.
  static func stamp(_ value: inout [UInt8], with stamp: UInt32) {
    let hex: StaticString = "0123456789abcdef"
    for k in 0..<min(8, value.count) {
      value[k] = hex.utf8Start[Int((stamp >> UInt32(28 - 4 * k)) & 0xF)]
    }
  }

  mutating func put(key: Int, value: [UInt8], idempotencyKey: UInt64?) -> [UInt8] {
    keyBytes = self.key(key)
    body.removeAll(keepingCapacity: true)
    switch plan.target {
    case .raftdb:
      append(&body, "{\"")
      body.append(contentsOf: keyBytes)
      append(&body, "\":\"")
      body.append(contentsOf: value)
      append(&body, "\"}")
      return request("POST", path: "/key", idempotencyKey: idempotencyKey)
    case .etcd:
      append(&body, "{\"key\":\"")
      base64Append(keyBytes, to: &body)
      append(&body, "\",\"value\":\"")
      base64Append(value, to: &body)
      append(&body, "\"}")
      return request("POST", path: "/v3/kv/put", idempotencyKey: nil)
    }
  }

  mutating func get(key: Int, level: ReadLevel) -> [UInt8] {
    keyBytes = self.key(key)
    body.removeAll(keepingCapacity: true)
    switch plan.target {
    case .raftdb:
      var path: [UInt8] = Array("/key/".utf8)
      path.append(contentsOf: keyBytes)
      append(&path, "?level=")
      path.append(contentsOf: level.rawValue.utf8)
      return request("GET", pathBytes: path, idempotencyKey: nil)
    case .etcd:
      // etcd has no lease read: "default" and "consistent" are both its linearizable read.
      append(&body, "{\"key\":\"")
      base64Append(keyBytes, to: &body)
      append(&body, level == .stale ? "\",\"serializable\":true}" : "\"}")
      return request("POST", path: "/v3/kv/range", idempotencyKey: nil)
    }
  }

  mutating func compareAndSet(key: Int, expected: [UInt8]?, value: [UInt8], idempotencyKey: UInt64?)
    -> [UInt8]
  {
    keyBytes = self.key(key)
    body.removeAll(keepingCapacity: true)
    switch plan.target {
    case .raftdb:
      append(&body, "{\"expect\":")
      if let expected {
        append(&body, "\"")
        body.append(contentsOf: expected)
        append(&body, "\"")
      } else {
        append(&body, "null")
      }
      append(&body, ",\"value\":\"")
      body.append(contentsOf: value)
      append(&body, "\"}")
      var path: [UInt8] = Array("/key/".utf8)
      path.append(contentsOf: keyBytes)
      append(&path, "/cas")
      return request("POST", pathBytes: path, idempotencyKey: idempotencyKey)
    case .etcd:
      encodedKey.removeAll(keepingCapacity: true)
      base64Append(keyBytes, to: &encodedKey)
      append(&body, "{\"compare\":[{\"key\":\"")
      body.append(contentsOf: encodedKey)
      if let expected {
        append(&body, "\",\"result\":\"EQUAL\",\"target\":\"VALUE\",\"value\":\"")
        base64Append(expected, to: &body)
        append(&body, "\"}]")
      } else {
        append(&body, "\",\"result\":\"EQUAL\",\"target\":\"CREATE\",\"create_revision\":\"0\"}]")
      }
      append(&body, ",\"success\":[{\"request_put\":{\"key\":\"")
      body.append(contentsOf: encodedKey)
      append(&body, "\",\"value\":\"")
      base64Append(value, to: &body)
      append(&body, "\"}}],\"failure\":[{\"request_range\":{\"key\":\"")
      body.append(contentsOf: encodedKey)
      append(&body, "\"}}]}")
      return request("POST", path: "/v3/kv/txn", idempotencyKey: nil)
    }
  }

  mutating func noop() -> [UInt8] {
    body.removeAll(keepingCapacity: true)
    return request("GET", path: plan.target == .raftdb ? "/livez" : "/version", idempotencyKey: nil)
  }

  private mutating func request(_ method: StaticString, path: StaticString, idempotencyKey: UInt64?)
    -> [UInt8]
  {
    request(
      method, pathBytes: Array(UnsafeBufferPointer(start: path.utf8Start, count: path.utf8CodeUnitCount)),
      idempotencyKey: idempotencyKey)
  }

  private mutating func request(_ method: StaticString, pathBytes: [UInt8], idempotencyKey: UInt64?)
    -> [UInt8]
  {
    scratch.removeAll(keepingCapacity: true)
    append(&scratch, method)
    append(&scratch, " ")
    scratch.append(contentsOf: pathBytes)
    append(&scratch, " HTTP/1.1\r\nHost: ")
    scratch.append(contentsOf: hostHeader)
    append(&scratch, "\r\n")
    if let idempotencyKey {
      append(&scratch, "Idempotency-Key: bench-")
      scratch.append(contentsOf: String(idempotencyKey, radix: 16).utf8)
      append(&scratch, "\r\n")
    }
    if !body.isEmpty {
      append(&scratch, "Content-Type: application/json\r\nContent-Length: ")
      scratch.append(contentsOf: String(body.count).utf8)
      append(&scratch, "\r\n")
    }
    append(&scratch, "\r\n")
    scratch.append(contentsOf: body)
    return scratch
  }

  private func append(_ bytes: inout [UInt8], _ text: StaticString) {
    bytes.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
  }
}
