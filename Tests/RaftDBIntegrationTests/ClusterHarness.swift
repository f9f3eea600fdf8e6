import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Raft
import RaftDBClient
import RaftDBVerify

/// Real `raftdb` processes on loopback, each with its own data directory, started and killed by
/// process id. Ports come from a range below 32768 (above it the kernel hands out ephemeral ports),
/// probed free before use.
final class ClusterHarness: @unchecked Sendable {
  // Unchecked: tests drive a harness from one task at a time; `processes` is guarded by `lock`.
  struct NodeSpec {
    var name: String
    var httpPort: Int
    var raftPort: Int
    var directory: URL
    var http: String { "127.0.0.1:\(httpPort)" }
    var raft: String { "127.0.0.1:\(raftPort)" }
  }

  let root: URL
  private(set) var nodes: [NodeSpec] = []
  private var processes: [String: Process] = [:]
  private let lock = NSLock()
  let extraArguments: [String]
  /// Environment variables every node starts with (test knobs such as RAFTDB_TEST_*).
  let extraEnvironment: [String: String]
  static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

  init(extraArguments: [String] = [], extraEnvironment: [String: String] = [:]) throws {
    root = FileManager.default.temporaryDirectory.appendingPathComponent(
      "raftdb-it-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    self.extraArguments = extraArguments
    self.extraEnvironment = extraEnvironment
  }

  deinit {
    stopAll(signal: SIGKILL)
    if ProcessInfo.processInfo.environment["RAFTDB_KEEP_TEST_DATA"] == nil {
      try? FileManager.default.removeItem(at: root)
    }
  }

  /// The raftdb executable built next to this test bundle.
  static var executable: URL {
    let products = Bundle.main.bundleURL.deletingLastPathComponent()
    for candidate in [
      products, Bundle.main.bundleURL,
      URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),
    ] {
      let url = candidate.appendingPathComponent("raftdb")
      if FileManager.default.isExecutableFile(atPath: url.path) { return url }
    }
    fatalError("raftdb executable not found next to \(products.path); build with `swift build --build-tests`")
  }

  /// Declares a node (ports chosen now) without starting it.
  @discardableResult
  func addNode(_ name: String) -> NodeSpec {
    let spec = NodeSpec(
      name: name, httpPort: PortAllocator.shared.next(), raftPort: PortAllocator.shared.next(),
      directory: root.appendingPathComponent(name))
    nodes.append(spec)
    return spec
  }

  func spec(_ name: String) -> NodeSpec { nodes.first { $0.name == name }! }

  /// Starts (or restarts) a node; `join` is the HTTP address to join through on first start.
  func start(
    _ name: String, join: String? = nil, arguments: [String] = [], environment: [String: String] = [:]
  ) throws {
    let spec = spec(name)
    var args = ["-id", name, "-haddr", spec.http, "-raddr", spec.raft]
    if let join { args += ["-join", join] }
    args += ["-heartbeat-interval", "50", "-election-timeout", "500", "-log-level", "info"]
    args += extraArguments + arguments + [spec.directory.path]
    try FileManager.default.createDirectory(at: spec.directory, withIntermediateDirectories: true)
    let process = try LoggedProcess.launch(
      Self.executable, arguments: args, environment: extraEnvironment.merging(environment) { $1 },
      appendingOutputTo: root.appendingPathComponent("\(name).log"))
    lock.withLock { processes[name] = process }
  }

  /// Kills a node's process (SIGKILL by default) and waits for it to exit.
  func kill(_ name: String, signal: Int32 = SIGKILL) {
    guard let process = lock.withLock({ processes.removeValue(forKey: name) }) else { return }
    Foundation.kill(process.processIdentifier, signal)
    process.waitUntilExit()
  }

  /// Waits until a node's process exits by itself; returns its exit status (nil: still running).
  func waitForExit(_ name: String, timeout: Duration = .seconds(10)) async -> Int32? {
    guard let process = lock.withLock({ processes[name] }) else { return nil }
    let deadline = ContinuousClock.now + timeout
    while process.isRunning && ContinuousClock.now < deadline {
      try? await Task.sleep(for: .milliseconds(20))
    }
    guard !process.isRunning else { return nil }
    lock.withLock { processes[name] = nil }
    return process.terminationStatus
  }

  func isRunning(_ name: String) -> Bool { lock.withLock { processes[name]?.isRunning ?? false } }

  /// A running node's process id.
  func pid(_ name: String) -> Int32? { lock.withLock { processes[name]?.processIdentifier } }

  /// A node's resident memory in bytes, from /proc.
  func residentBytes(_ name: String) -> Int? {
    guard let pid = pid(name),
      let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
      let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
    else { return nil }
    return line.split(separator: " ").dropFirst().first.flatMap { Int($0) }.map { $0 * 1024 }
  }

  /// The sum of a metric's samples whose labels contain `labels` (e.g. `reason="unknown_peer"`).
  func metric(_ name: String, _ node: String, labels: String = "") async -> Double {
    guard let text = try? await request(node, .GET, "/metrics").bodyText else { return -1 }
    var total = 0.0
    for line in text.split(separator: "\n") where line.hasPrefix(name) && !line.hasPrefix("#") {
      let key = line.split(separator: " ").first.map(String.init) ?? ""
      guard key == name || key.hasPrefix(name + "{"), labels.isEmpty || key.contains(labels) else { continue }
      total += Double(line.split(separator: " ").last ?? "") ?? 0
    }
    return total
  }

  /// Sends SIGTERM and waits; returns the exit status.
  func terminate(_ name: String) -> Int32? {
    guard let process = lock.withLock({ processes.removeValue(forKey: name) }) else { return nil }
    Foundation.kill(process.processIdentifier, SIGTERM)
    process.waitUntilExit()
    return process.terminationStatus
  }

  func stopAll(signal: Int32 = SIGTERM) {
    let all = lock.withLock { () -> [Process] in
      defer { processes = [:] }
      return Array(processes.values)
    }
    for process in all where process.isRunning { Foundation.kill(process.processIdentifier, signal) }
    for process in all { process.waitUntilExit() }
  }

  func log(_ name: String) -> String {
    (try? String(contentsOf: root.appendingPathComponent("\(name).log"), encoding: .utf8)) ?? ""
  }

  // MARK: HTTP

  /// Sends one request to one node without following redirects.
  func request(
    _ name: String, _ method: HTTPMethod, _ path: String, body: String? = nil,
    headers: [(String, String)] = [], timeout: TimeAmount = .seconds(15)
  ) async throws -> HTTPResponseData {
    let spec = spec(name)
    let connection = try await HTTPConnection.connect(
      host: "127.0.0.1", port: spec.httpPort, group: Self.group)
    defer { Task { await connection.close() } }
    return try await connection.send(
      HTTPRequestData(method: method, path: path, headers: headers, body: Array((body ?? "").utf8)),
      timeout: timeout)
  }

  /// A client over every running node.
  func client() -> RaftDBClient {
    RaftDBClient(endpoints: nodes.map(\.http), group: Self.group)
  }

  /// The status JSON of a node, or nil if it does not answer.
  func status(_ name: String) async -> [String: Any]? {
    guard let response = try? await request(name, .GET, "/status"), response.status == .ok else { return nil }
    return (try? JSONSerialization.jsonObject(with: Data(response.body))) as? [String: Any]
  }

  /// Every member's id as `node` (default: the first) lists them in `/status`, by name, as a
  /// function (tests build frames with these ids).
  func memberIDs(from node: String? = nil) async throws -> (String) -> NodeID {
    let source = node ?? nodes[0].name
    guard let members = await status(source)?["members"] as? [[String: Any]] else {
      throw HarnessError("\(source) did not answer /status")
    }
    var ids: [String: NodeID] = [:]
    for member in members {
      guard let name = member["id"] as? String, let hex = member["member_id"] as? String,
        let id = NodeID(hex: hex)
      else { throw HarnessError("\(source) lists a member without a member id: \(member)") }
      ids[name] = id
    }
    return { name in
      guard let id = ids[name] else { preconditionFailure("\(name) is not a member: \(ids)") }
      return id
    }
  }

  /// Waits until one of `among` reports itself leader and the others agree; returns its name.
  func waitForLeader(among names: [String]? = nil, timeout: Duration = .seconds(20)) async -> String? {
    let candidates = names ?? nodes.map(\.name)
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      var leaders: [String: Int] = [:]
      var self_leaders: [String] = []
      for name in candidates where isRunning(name) {
        guard let status = await status(name) else { continue }
        if status["state"] as? String == "leader" { self_leaders.append(name) }
        if let leader = (status["leader"] as? [String: Any])?["id"] as? String {
          leaders[leader, default: 0] += 1
        }
      }
      if self_leaders.count == 1, let leader = self_leaders.first,
        leaders[leader, default: 0] >= (candidates.filter(isRunning).count / 2 + 1)
      {
        return leader
      }
      try? await Task.sleep(for: .milliseconds(50))
    }
    return nil
  }

  /// Polls until `condition` holds or the timeout passes.
  func eventually(timeout: Duration = .seconds(20), _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      if await condition() { return true }
      try? await Task.sleep(for: .milliseconds(50))
    }
    return await condition()
  }

  /// Waits until every named member reports `version` as the cluster version (`GET /version`).
  /// The version rises some seconds after a cluster forms; tests whose outcome depends on it wait.
  func waitForClusterVersion(_ version: Int, among names: [String], timeout: Duration = .seconds(20)) async
    -> Bool
  {
    await eventually(timeout: timeout) {
      for name in names {
        let body = (try? await self.request(name, .GET, "/version"))?.bodyText ?? ""
        if !body.contains(#""cluster":\#(version)"#) { return false }
      }
      return true
    }
  }

  /// Starts a cluster the course's way: the first node bootstraps, the others join through it.
  func startCluster(_ names: [String]) async throws -> String {
    for name in names { addNode(name) }
    try start(names[0])
    guard await waitForLeader(among: [names[0]]) != nil else {
      throw HarnessError("\(names[0]) did not lead")
    }
    for name in names.dropFirst() {
      try start(name, join: spec(names[0]).http)
    }
    let joined = await eventually {
      guard let status = await self.status(names[0]) else { return false }
      let members = status["members"] as? [[String: Any]] ?? []
      return members.filter { $0["voter"] as? Bool == true }.count == names.count
    }
    guard joined else { throw HarnessError("cluster of \(names) did not form:\n\(log(names.last!))") }
    guard let leader = await waitForLeader(among: names) else { throw HarnessError("no leader") }
    return leader
  }
}

/// 127.0.0.1:`port` for the socket calls.
func loopbackAddress(_ port: Int) -> sockaddr_in {
  var address = sockaddr_in()
  address.sin_family = sa_family_t(AF_INET)
  address.sin_port = in_port_t(UInt16(port).bigEndian)
  address.sin_addr.s_addr = inet_addr("127.0.0.1")
  return address
}

struct HarnessError: Error, CustomStringConvertible {
  var description: String
  init(_ description: String) { self.description = description }
}

/// Hands out loopback ports below 32768 that are free right now, never the same one twice in a run.
final class PortAllocator: @unchecked Sendable {
  // Unchecked: `next` is guarded by `lock`.
  static let shared = PortAllocator()
  private let lock = NSLock()
  private var candidate: Int

  private init() {
    // Spread concurrent test processes apart.
    candidate = 20_000 + Int(getpid() % 500) * 20
  }

  func next() -> Int {
    lock.withLock {
      while true {
        candidate += 1
        if candidate >= 32_000 { candidate = 20_000 }
        if Self.isFree(candidate) { return candidate }
      }
    }
  }

  /// The first of `count` consecutive free ports (for `raftctl cluster start`, which numbers its
  /// nodes' ports from one base).
  func nextBlock(_ count: Int) -> Int {
    while true {
      let first = next()
      if (1..<count).allSatisfy({ Self.isFree(first + $0) }) {
        lock.withLock { candidate = max(candidate, first + count - 1) }
        return first
      }
    }
  }

  static func isFree(_ port: Int) -> Bool {
    let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard socket >= 0 else { return false }
    defer { close(socket) }
    var address = loopbackAddress(port)
    return withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
      }
    }
  }
}

extension ClusterHarness {
  /// What a `raftctl` run printed, how it exited and how long it took.
  struct CommandRun {
    var status: Int32
    var stdout: String
    var stderr: String
    var seconds: Double
  }

  /// Runs the `raftctl` built next to `raftdb` (or the one `RAFTDB_TEST_RAFTCTL` names, to check
  /// that a test fails against another build), killing it after `timeout` seconds. `stdin` is
  /// written to its standard input (nil: it inherits the test's).
  static func runRaftctl(_ arguments: [String], stdin: String? = nil, timeout: Double = 30) throws
    -> CommandRun
  {
    try runProcess(
      ProcessInfo.processInfo.environment["RAFTDB_TEST_RAFTCTL"].map { URL(fileURLWithPath: $0) }
        ?? executable.deletingLastPathComponent().appendingPathComponent("raftctl"),
      arguments, stdin: stdin, timeout: timeout)
  }

  /// Runs a program to its end, killing it after `timeout` seconds; `stdin` is written to its
  /// standard input (nil: it inherits the test's).
  static func runProcess(_ executable: URL, _ arguments: [String], stdin: String? = nil, timeout: Double = 30)
    throws -> CommandRun
  {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    let input = stdin.map { _ in Pipe() }
    if let input { process.standardInput = input }
    let began = Date()
    try process.run()
    if let input, let stdin {
      input.fileHandleForWriting.write(Data(stdin.utf8))
      try input.fileHandleForWriting.close()
    }
    let killer = DispatchWorkItem { if process.isRunning { process.terminate() } }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    killer.cancel()
    return CommandRun(
      status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
      stderr: String(decoding: stderr, as: UTF8.self), seconds: Date().timeIntervalSince(began))
  }
}
