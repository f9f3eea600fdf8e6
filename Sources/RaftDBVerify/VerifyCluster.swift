import Foundation
import NIOCore
import NIOPosix
import RaftDBClient
import RaftDBServer

/// Real raftdb processes, each behind the fault proxy: peers are told the proxy's port (`-raddr`), the
/// node listens on a private one (`-raft-listen`). Clients talk to the nodes' HTTP ports directly.
public final class VerifyCluster: @unchecked Sendable {
  // Unchecked: one verification task drives the cluster; `nodes` is guarded by `lock`.
  public struct Node: Sendable {
    public var name: String
    /// The member id the node chose for itself (0 until the cluster has formed: `start` reads it
    /// from `/status`).
    public var id: UInt64
    public var httpPort: Int
    public var advertisedRaftPort: Int
    public var listenRaftPort: Int
    public var directory: URL
    public var http: String { "127.0.0.1:\(httpPort)" }
    public var raft: String { "127.0.0.1:\(advertisedRaftPort)" }
  }

  public let directory: URL
  public let proxy: FaultProxy
  public private(set) var specs: [Node] = []
  private var processes: [String: Process] = [:]
  private var paused: Set<String> = []
  private let lock = NSLock()
  private let raftdb: URL
  private let group: any EventLoopGroup
  private let arguments: [String]

  public init(
    nodeCount: Int, directory: URL, raftdb: URL, group: any EventLoopGroup, firstPort: Int,
    extraArguments: [String] = []
  ) {
    self.directory = directory
    self.raftdb = raftdb
    self.group = group
    arguments = extraArguments
    proxy = FaultProxy(group: group)
    for k in 1...nodeCount {
      let name = String(format: "n%d", k)
      let base = firstPort + 3 * (k - 1)
      specs.append(
        Node(
          name: name, id: 0, httpPort: base,
          advertisedRaftPort: base + 1,
          listenRaftPort: base + 2, directory: directory.appendingPathComponent(name)))
    }
  }

  public func node(_ name: String) -> Node { specs.first { $0.name == name }! }

  public var names: [String] { specs.map(\.name) }

  /// Starts proxies and processes; the first node bootstraps, the others join through it.
  public func start() async throws {
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    for spec in specs {
      try await proxy.addRoute(listenPort: spec.advertisedRaftPort, upstreamPort: spec.listenRaftPort)
    }
    try launch(specs[0].name, join: nil)
    guard
      await waitFor(timeout: .seconds(20), { await self.status(of: self.specs[0].name)?.state == "leader" })
    else {
      throw VerifyError("\(specs[0].name) did not become leader")
    }
    for spec in specs.dropFirst() { try launch(spec.name, join: specs[0].http) }
    let formed = await waitFor(timeout: .seconds(60)) {
      guard let status = await self.status(of: self.specs[0].name) else { return false }
      return status.members.filter { $0.voter == true }.count == self.specs.count
    }
    guard formed else { throw VerifyError("the cluster did not form within 60 seconds") }
    guard let status = await status(of: specs[0].name) else { throw VerifyError("\(specs[0].name) stopped") }
    for member in status.members {
      guard let k = specs.firstIndex(where: { $0.name == member.id }),
        let id = member.memberID.flatMap({ UInt64($0, radix: 16) })
      else { throw VerifyError("/status names no member id for \(member.id)") }
      specs[k].id = id
    }
  }

  private func launch(_ name: String, join: String?) throws {
    let spec = node(name)
    try FileManager.default.createDirectory(at: spec.directory, withIntermediateDirectories: true)
    var args = [
      "-id", name, "-haddr", spec.http, "-raddr", spec.raft, "-raft-listen",
      "127.0.0.1:\(spec.listenRaftPort)",
    ]
    if let join { args += ["-join", join] }
    args += arguments + [spec.directory.path]
    let process = try LoggedProcess.launch(
      raftdb, arguments: args, appendingOutputTo: directory.appendingPathComponent("\(name).log"))
    lock.withLock {
      processes[name] = process
      paused.remove(name)
    }
  }

  public func isRunning(_ name: String) -> Bool { lock.withLock { processes[name]?.isRunning ?? false } }

  public func isPaused(_ name: String) -> Bool { lock.withLock { paused.contains(name) } }

  /// kill -9.
  public func kill(_ name: String) {
    guard let process = lock.withLock({ processes.removeValue(forKey: name) }) else { return }
    Foundation.kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
    lock.withLock { _ = paused.remove(name) }
  }

  /// Restarts a killed node from its data directory (no -join: it has state).
  public func restart(_ name: String) throws {
    guard !isRunning(name) else { return }
    try launch(name, join: nil)
  }

  public func pause(_ name: String) {
    guard let process = lock.withLock({ processes[name] }), process.isRunning else { return }
    Foundation.kill(process.processIdentifier, SIGSTOP)
    lock.withLock { _ = paused.insert(name) }
  }

  public func resume(_ name: String) {
    guard let process = lock.withLock({ processes[name] }) else { return }
    Foundation.kill(process.processIdentifier, SIGCONT)
    lock.withLock { _ = paused.remove(name) }
  }

  public func stopAll() {
    let all = lock.withLock { () -> [Process] in
      defer { processes = [:] }
      return Array(processes.values)
    }
    for process in all where process.isRunning {
      Foundation.kill(process.processIdentifier, SIGCONT)
      Foundation.kill(process.processIdentifier, SIGKILL)
    }
    for process in all { process.waitUntilExit() }
  }

  // MARK: Observing

  public func status(of name: String) async -> NodeStatus? {
    guard isRunning(name), !isPaused(name) else { return nil }
    let client = RaftDBClient(endpoints: [node(name).http], group: group, options: quickOptions)
    defer { Task { await client.close() } }
    return try? await client.status(endpoint: node(name).http)
  }

  private var quickOptions: RaftDBClient.Options {
    var options = RaftDBClient.Options()
    options.deadline = .seconds(2)
    options.requestTimeout = .seconds(1)
    return options
  }

  /// The node that running nodes agree leads, if any.
  public func leader() async -> String? {
    for name in names {
      if let status = await status(of: name), status.state == "leader" { return name }
    }
    return nil
  }

  public func waitFor(timeout: Duration, _ condition: () async -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      if await condition() { return true }
      try? await Task.sleep(for: .milliseconds(100))
    }
    return await condition()
  }

  // MARK: Membership

  /// Removes a member through whichever node leads.
  public func removeMember(_ name: String) async throws {
    let client = RaftDBClient(endpoints: specs.filter { isRunning($0.name) }.map(\.http), group: group)
    defer { Task { await client.close() } }
    try await client.remove(id: name)
  }

  /// Adds a removed member back (its process keeps its data directory and stays up meanwhile).
  public func addMemberBack(_ name: String) async throws {
    let spec = node(name)
    let client = RaftDBClient(endpoints: specs.filter { isRunning($0.name) }.map(\.http), group: group)
    defer { Task { await client.close() } }
    try await client.join(
      id: name, raftAddress: spec.raft, httpAddress: spec.http, memberID: String(spec.id, radix: 16))
  }

  public func log(of name: String) -> String {
    (try? String(contentsOf: directory.appendingPathComponent("\(name).log"), encoding: .utf8)) ?? ""
  }
}

public struct VerifyError: Error, CustomStringConvertible {
  public var description: String
  public init(_ description: String) { self.description = description }
}
