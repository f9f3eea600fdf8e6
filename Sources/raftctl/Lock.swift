import ArgumentParser
import Foundation
import JSON
import RaftDBClient

/// `raftctl lock NAME -- COMMAND`: etcdctl's lock recipe on raftdb's leases and transactions.
struct Lock: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Hold a distributed lock while a command runs: raftctl lock NAME [--ttl S] -- COMMAND [ARGS...].",
    discussion: """
      Grants a lease of --ttl seconds and keeps it alive, creates the key NAME/<lease id in hex> \
      under it, waits until that key has the lowest create revision under NAME/, then runs COMMAND \
      with RAFTDB_LOCK_KEY (the key) and RAFTDB_LOCK_REVISION (its create revision: a fencing token \
      that grows with every holder) in its environment. When COMMAND exits, the key is deleted and \
      the lease revoked, and raftctl exits with COMMAND's status. If raftctl itself dies, the lock \
      is released when the lease expires, --ttl seconds later. If the lease is lost while COMMAND \
      runs, raftctl warns on stderr: the lock may then be held by another.
      """)
  @OptionGroup var connection: Connection
  @Option(help: "The lease's time to live in seconds.") var ttl = 10
  @Argument(help: "The lock's name: the prefix of the waiters' keys.") var name: String
  @Argument(parsing: .postTerminator, help: "The command to run while holding the lock, after --.")
  var command: [String] = []

  func validate() throws {
    guard ttl > 0 else { throw ValidationError("--ttl must be a positive number of seconds") }
    guard !name.isEmpty else { throw ValidationError("the lock needs a NAME") }
    guard !command.isEmpty else { throw ValidationError("give the command to run after --") }
  }

  func run() async throws {
    let client = connection.client()
    let grant = try await client.grantLease(ttl: ttl)
    guard let lease = grant["id"]?.intValue else {
      throw RaftDBClientError.badResponse("no lease id in \(grant)")
    }
    let prefix = name.hasSuffix("/") ? name : name + "/"
    let key = prefix + leaseHex(lease)
    let renewals = connection.client()
    let keeper = Task { await Self.keepAlive(lease, ttl: ttl, client: renewals) }
    let status: Int32
    do {
      let revision = try await Self.acquire(
        key, prefix: prefix, lease: lease, client: client, endpoints: connection.endpoints.list)
      status = try await Self.runCommand(command, key: key, revision: revision)
    } catch {
      keeper.cancel()
      await Self.release(key, lease: lease, client: client)
      throw error
    }
    keeper.cancel()
    await Self.release(key, lease: lease, client: client)
    if status != 0 { throw ExitCode(status) }
  }

  /// Creates `key` holding `value` under `lease` (if no one has: compare its create revision with
  /// 0), then waits until it is the oldest key under `prefix`; returns its create revision, the
  /// fencing token. Between reads of the queue it watches the prefix for deletes (as etcdctl
  /// watches the key just before its own), through `endpoints`.
  static func acquire(
    _ key: String, value: String = "", prefix: String, lease: Int, client: RaftDBClient, endpoints: [String]
  ) async throws -> Int {
    let create = JSONValue([
      "compare": .array([
        JSONValue([
          "key": JSONValue(key), "target": JSONValue("create"), "result": JSONValue("="),
          "value": JSONValue(0),
        ])
      ]),
      "success": .array([
        JSONValue([
          "put": JSONValue(["key": JSONValue(key), "value": JSONValue(value), "lease": JSONValue(lease)])
        ])
      ]),
      "failure": .array([JSONValue(["get": JSONValue(["key": JSONValue(key)])])]),
    ])
    let outcome = try await client.txn(create)
    // The key is new at the transaction's revision; if it already existed (a retried request), its
    // own create revision stands.
    let existing = outcome["responses"]?[0]?["get"]?["kvs"]?[0]?["create_revision"]?.intValue
    guard let revision = outcome["succeeded"]?.boolValue == true ? outcome["revision"]?.intValue : existing
    else {
      throw RaftDBClientError.badResponse("no revision for the lock key in \(outcome)")
    }
    while true {
      guard let waiters = try await client.range(prefix, prefix: true, keysOnly: true, level: .consistent)
      else { throw RaftDBClientError.badResponse("no answer for the range \(prefix)") }
      let kvs = waiters["kvs"]?.arrayValue ?? []
      guard kvs.contains(where: { $0["key"]?.stringValue == key }) else {
        throw RaftDBClientError.server(status: 410, message: "lock key \(key) vanished: its lease expired")
      }
      let oldest = kvs.compactMap { $0["create_revision"]?.intValue }.min()
      if oldest == revision { return revision }
      try Task.checkCancellation()
      await PrefixChanges.next(
        after: waiters["revision"]?.intValue ?? revision, under: prefix, endpoints: endpoints,
        deletesOnly: true)
    }
  }

  /// Renews `lease` every third of its TTL until cancelled, on a client of its own so that its
  /// renewals never wait behind the lock's requests; warns on stderr if the lease is lost. Returns
  /// whether it was.
  @discardableResult
  static func keepAlive(_ lease: Int, ttl: Int, client: RaftDBClient, holding what: String = "lock")
    async -> Bool
  {
    var lost = false
    while !Task.isCancelled {
      try? await Task.sleep(for: .milliseconds(ttl * 1000 / 3))
      if Task.isCancelled { break }
      do {
        let answer = try await client.keepAliveLease(lease)
        if (answer["ttl"]?.intValue ?? 0) <= 0 {
          throw RaftDBClientError.server(status: 404, message: "expired")
        }
      } catch RaftDBClientError.server(404, _) {
        // Cancelled: the lease was revoked on purpose, after the command.
        if Task.isCancelled { break }
        FileHandle.standardError.write(
          Data(
            "raftctl: warning: \(what) lease \(leaseHex(lease)) lost; the \(what) is no longer held\n".utf8))
        lost = true
        break
      } catch {
        if Task.isCancelled { break }
        FileHandle.standardError.write(
          Data("raftctl: warning: \(what) lease \(leaseHex(lease)) not renewed: \(error)\n".utf8))
      }
    }
    await client.close()
    return lost
  }

  /// Runs `command` (looked up on PATH) with the lock's key and fencing token in its environment,
  /// its standard streams raftctl's own; returns its exit status (128 + the signal if one killed it).
  static func runCommand(_ command: [String], key: String, revision: Int) async throws -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = command
    var environment = ProcessInfo.processInfo.environment
    environment["RAFTDB_LOCK_KEY"] = key
    environment["RAFTDB_LOCK_REVISION"] = String(revision)
    process.environment = environment
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
      process.terminationHandler = { _ in continuation.resume() }
      do {
        try process.run()
      } catch {
        process.terminationHandler = nil
        continuation.resume(throwing: error)
      }
    }
    return process.terminationReason == .uncaughtSignal
      ? 128 + process.terminationStatus : process.terminationStatus
  }

  /// Deletes the lock key and revokes the lease; a failure only warns, since the lease's expiry
  /// releases the lock anyway.
  static func release(_ key: String, lease: Int, client: RaftDBClient) async {
    do {
      try await client.delete(key)
      _ = try await client.revokeLease(lease)
    } catch {
      FileHandle.standardError.write(
        Data(
          "raftctl: warning: releasing \(key): \(error); it goes when lease \(leaseHex(lease)) expires\n".utf8
        ))
    }
    await client.close()
  }
}
