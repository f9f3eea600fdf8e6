import ArgumentParser
import Foundation
import JSON
import RaftDBClient

/// A lease id as raftctl reads it: hex, as etcdctl and `raftctl lease grant` print it (the HTTP API
/// speaks decimal).
func parseLeaseID(_ text: String) throws -> Int {
  guard let id = Int(text.hasPrefix("0x") ? String(text.dropFirst(2)) : text, radix: 16), id > 0 else {
    throw ValidationError("lease id \(text) is not a positive hex number (as raftctl lease grant prints it)")
  }
  return id
}

/// A lease id as raftctl prints it: hex, as etcdctl does.
func leaseHex(_ id: Int) -> String { String(id, radix: 16) }

/// Prints a server answer as compact JSON with sorted keys (`-w json`).
func printServerJSON(_ value: JSONValue) {
  print(String(decoding: value.serialized(sortingKeys: true), as: UTF8.self))
}

struct Lease: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Grant, renew, inspect, list and revoke leases (ids in hex, as etcdctl prints them).",
    subcommands: [Grant.self, KeepAlive.self, TimeToLive.self, Revoke.self, List.self])

  struct Grant: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Grant a lease of TTL seconds.")
    @OptionGroup var connection: Connection
    @OptionGroup var output: Output
    @Argument(help: "Time to live in seconds.") var ttl: Int

    func validate() throws {
      guard ttl > 0 else { throw ValidationError("TTL must be a positive number of seconds") }
    }

    func run() async throws {
      let client = connection.client()
      let answer = try await client.grantLease(ttl: ttl)
      await client.close()
      if output.isJSON { return printServerJSON(answer) }
      let id = answer["id"]?.intValue ?? 0
      print("lease \(leaseHex(id)) granted with TTL(\(answer["ttl"]?.intValue ?? ttl)s)")
    }
  }

  struct KeepAlive: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "keep-alive",
      abstract: "Renew a lease, about every third of its TTL, until interrupted (--once: one renewal).",
      discussion: "Exit status 1 when the lease has expired or was revoked.")
    @OptionGroup var connection: Connection
    @OptionGroup var output: Output
    @Flag(help: "Renew once and exit.") var once = false
    @Argument(help: "The lease id, in hex.") var id: String

    func validate() throws { _ = try parseLeaseID(id) }

    func run() async throws {
      let lease = try parseLeaseID(id)
      let client = connection.client()
      while true {
        let answer: JSONValue
        do {
          answer = try await client.keepAliveLease(lease)
        } catch RaftDBClientError.server(404, _) {
          await client.close()
          FileHandle.standardError.write(Data("raftctl: lease \(id) expired or revoked\n".utf8))
          throw ExitCode(1)
        }
        let ttl = answer["ttl"]?.intValue ?? 0
        if output.isJSON {
          printServerJSON(answer)
        } else {
          print("lease \(leaseHex(lease)) keepalived with TTL(\(ttl))")
        }
        if once { return }
        try await Task.sleep(for: .milliseconds(max(ttl, 1) * 1000 / 3))
      }
    }
  }

  struct TimeToLive: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "ttl", abstract: "Show a lease's remaining time (exit status 1 if it does not exist).")
    @OptionGroup var connection: Connection
    @OptionGroup var output: Output
    @Flag(help: "List the keys attached to the lease.") var keys = false
    @Argument(help: "The lease id, in hex.") var id: String

    func validate() throws { _ = try parseLeaseID(id) }

    func run() async throws {
      let lease = try parseLeaseID(id)
      let client = connection.client()
      let answer = try await client.leaseTimeToLive(lease)
      await client.close()
      guard let answer else {
        FileHandle.standardError.write(Data("raftctl: lease \(id) already expired\n".utf8))
        throw ExitCode(1)
      }
      if output.isJSON { return printServerJSON(answer) }
      let granted = answer["granted_ttl"]?.intValue ?? 0
      let remaining = answer["ttl"]?.intValue ?? 0
      var line = "lease \(leaseHex(lease)) granted with TTL(\(granted)s), remaining(\(remaining)s)"
      if keys {
        let names = (answer["keys"]?.arrayValue ?? []).compactMap(\.stringValue)
        line += ", attached keys(\(names))"
      }
      print(line)
    }
  }

  struct Revoke: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Revoke a lease and delete its keys.")
    @OptionGroup var connection: Connection
    @OptionGroup var output: Output
    @Argument(help: "The lease id, in hex.") var id: String

    func validate() throws { _ = try parseLeaseID(id) }

    func run() async throws {
      let lease = try parseLeaseID(id)
      let client = connection.client()
      let answer = try await client.revokeLease(lease)
      await client.close()
      if output.isJSON { return printServerJSON(answer) }
      print("lease \(leaseHex(lease)) revoked (\(answer["deleted"]?.intValue ?? 0) keys deleted)")
    }
  }

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the live leases.")
    @OptionGroup var connection: Connection
    @OptionGroup var output: Output

    func run() async throws {
      let client = connection.client()
      let ids = try await client.leases()
      await client.close()
      if output.isJSON { return printServerJSON(JSONValue(["leases": .array(ids.map { JSONValue($0) })])) }
      print("found \(ids.count) leases")
      for id in ids { print(leaseHex(id)) }
    }
  }
}
