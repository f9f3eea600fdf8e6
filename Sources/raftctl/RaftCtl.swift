import ArgumentParser
import Foundation
import JSON
import RaftDBAPI
import RaftDBClient
import RaftDBServer

@main
struct RaftCtl: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "raftctl",
    abstract: "Command-line client and tools for raftdb.",
    discussion: """
      Endpoints are the HTTP addresses of any members (--endpoints or RAFTDB_ENDPOINTS, host:port \
      or http://host:port); requests follow redirects to the leader and move on to the next \
      endpoint when one is down. Output is for people; -w json prints what the server answered.

      Exit status: 0 success; 1 the key or lease was not found (get, lease ttl) or the comparison \
      failed (cas); 2 the server refused the request (or compacted what a watch needed); 64 a usage error; 69 the cluster is unavailable (no endpoint \
      reachable, or no leader within --timeout).
      """,
    version: RaftCtl.versionText,
    subcommands: [
      Put.self, Get.self, Delete.self, CompareAndSet.self, Status.self, Members.self, Join.self, Remove.self,
      Transfer.self, Lease.self, Txn.self, Lock.self, Elect.self, Watch.self, Cluster.self, Bench.self,
      WatchBench.self,
      Verify.self,
    ])

  /// What `--version` prints: this build, and the newest cluster version and data format it
  /// speaks (the server's `GET /version` and data directories say the same).
  static let versionText = BuildVersion.description(of: "raftctl")

  /// Runs the subcommand, and turns a client's failure into one line on stderr and its exit status
  /// (see the discussion above) instead of ArgumentParser's generic "Error:" and status 1.
  static func main() async {
    do {
      var command = try parseAsRoot()
      if var asynchronous = command as? any AsyncParsableCommand {
        try await asynchronous.run()
      } else {
        try command.run()
      }
    } catch let error as RaftDBClientError {
      FileHandle.standardError.write(Data("raftctl: \(error)\n".utf8))
      Foundation.exit(error.exitStatus)
    } catch {
      exit(withError: error)
    }
  }
}

extension RaftDBClientError {
  /// raftctl's exit status for this failure (documented in `raftctl --help`).
  var exitStatus: Int32 {
    switch self {
    case .unavailable: 69
    case .server(let status, _) where status == 503: 69
    case .server, .badResponse: 2
    }
  }
}

struct Endpoints: ParsableArguments {
  @Option(
    help:
      "Comma-separated HTTP addresses of members, host:port or http://host:port (default: $RAFTDB_ENDPOINTS or localhost:8091)."
  )
  var endpoints: String?

  /// The endpoints as host:port (one that is neither form stays as written; `validate` refuses it).
  var list: [String] {
    let text = endpoints ?? ProcessInfo.processInfo.environment["RAFTDB_ENDPOINTS"] ?? "localhost:8091"
    return text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
      .map { endpointHostPort($0) ?? $0 }
  }

  func validate() throws {
    guard !list.isEmpty else { throw ValidationError("no endpoints; give --endpoints host:port,...") }
    for endpoint in list where endpointHostPort(endpoint) == nil {
      throw ValidationError("endpoint \(endpoint) is not host:port or http://host:port")
    }
  }
}

/// The endpoints and how long to keep retrying: what every command that talks to the cluster
/// through `RaftDBClient` takes.
struct Connection: ParsableArguments {
  @OptionGroup var endpoints: Endpoints

  @Option(help: "Give up after this many seconds of retrying (no leader, members down).")
  var timeout: Double = 15

  func validate() throws {
    guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
  }

  func client() -> RaftDBClient {
    var options = RaftDBClient.Options()
    options.deadline = .milliseconds(Int64(timeout * 1000))
    // A wait for a leader says what it waits for, on stderr so that output stays clean for scripts.
    options.onRetry = { problem in FileHandle.standardError.write(Data("raftctl: \(problem)\n".utf8)) }
    return RaftDBClient(endpoints: endpoints.list, options: options)
  }
}

/// `-w simple|json`: for people (the default), or the server's JSON for scripts.
struct Output: ParsableArguments {
  enum Format: String, ExpressibleByArgument, CaseIterable {
    case simple
    case json
  }

  @Option(name: [.customShort("w"), .customLong("write-out")], help: "Output format: simple or json.")
  var format: Format = .simple

  var isJSON: Bool { format == .json }
}

/// Prints an object compactly with sorted keys and unescaped slashes (as JSONSerialization's
/// `[.sortedKeys, .withoutEscapingSlashes]` did).
func printJSON(_ members: KeyValuePairs<String, JSONValue>) {
  print(String(decoding: JSONValue(members).serialized(sortingKeys: true), as: UTF8.self))
}

/// Prints rows under a header with every column padded to its widest cell, as etcdctl's tables
/// line up (without the box drawing, so that the output still greps and cuts well).
func printTable(_ header: [String], _ rows: [[String]]) {
  var widths = header.map(\.count)
  for row in rows {
    for (column, cell) in row.enumerated() where column < widths.count {
      widths[column] = max(widths[column], cell.count)
    }
  }
  for row in [header] + rows {
    let cells = row.enumerated().map { column, cell in
      column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
    }
    print(cells.joined(separator: "  "))
  }
}

struct Put: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Set keys: raftctl put foo bar, or raftctl put foo=bar baz=qux (one atomic write).")
  @OptionGroup var connection: Connection
  @OptionGroup var output: Output
  @Option(help: "Attach the keys to this lease (its id in hex, as `raftctl lease grant` prints it).")
  var lease: String?
  @Argument(help: "KEY VALUE, or one or more KEY=VALUE pairs.") var arguments: [String] = []

  /// The pairs the arguments name; a usage error (with this subcommand's usage) if they name none.
  var pairs: [String: String] {
    get throws {
      if arguments.count == 2 && !arguments[0].contains("=") { return [arguments[0]: arguments[1]] }
      var pairs: [String: String] = [:]
      for argument in arguments {
        guard let equals = argument.firstIndex(of: "="), equals != argument.startIndex else {
          throw ValidationError("expected KEY VALUE or KEY=VALUE pairs, got \(argument)")
        }
        pairs[String(argument[..<equals])] = String(argument[argument.index(after: equals)...])
      }
      guard !pairs.isEmpty else { throw ValidationError("nothing to put: give KEY VALUE or KEY=VALUE") }
      return pairs
    }
  }

  func validate() throws {
    _ = try pairs
    if let lease { _ = try parseLeaseID(lease) }
  }

  func run() async throws {
    let client = connection.client()
    let revision =
      if let lease { try await client.put(try pairs, lease: try parseLeaseID(lease)) } else {
        try await client.put(try pairs)
      }
    await client.close()
    if output.isJSON {
      printJSON(["revision": JSONValue(revision)])
    } else {
      print("OK (revision \(revision))")
    }
  }
}

struct Get: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Read a key, or with --prefix every key under it (exit status 1 if the key is absent).",
    discussion: """
      raftctl get KEY prints its value. --prefix prints each key under KEY on a line, then its value \
      on the next (as etcdctl does); --keys-only prints only the keys and --count-only only how many \
      there are. --rev R reads the store as it was at revision R. With any of these, -w json prints \
      the server's {"kvs", "count", "more", "revision"}.
      """)
  @OptionGroup var connection: Connection
  @OptionGroup var output: Output
  @Option(help: "stale, default or consistent (linearizable).") var level: String = "default"
  @Flag(help: "Print the key on the line before its value.") var printKey = false
  @Flag(help: "Read every key that starts with KEY.") var prefix = false
  @Option(help: "Return at most this many keys (with --prefix).") var limit: Int?
  @Option(name: .customLong("rev"), help: "Read the store as it was at this revision.") var revision: Int?
  @Flag(help: "Print only the keys, not their values.") var keysOnly = false
  @Flag(help: "Print only how many keys there are.") var countOnly = false
  @Argument var key: String

  /// Whether a flag asks for the multi-version range rather than the course's plain read.
  var wantsRange: Bool { prefix || limit != nil || revision != nil || keysOnly || countOnly }

  func validate() throws {
    guard ReadLevel(parameter: level) != nil else {
      throw ValidationError("unknown --level \(level); use stale, default or consistent")
    }
    if let limit, limit <= 0 { throw ValidationError("--limit must be positive") }
    if let revision, revision <= 0 { throw ValidationError("--rev must be a positive revision") }
    if limit != nil && !prefix { throw ValidationError("--limit needs --prefix") }
    if keysOnly && countOnly { throw ValidationError("give at most one of --keys-only and --count-only") }
  }

  func run() async throws {
    if wantsRange { return try await runRange() }
    let client = connection.client()
    let value = try await client.get(key, level: ReadLevel(parameter: level)!)
    await client.close()
    guard let value else {
      FileHandle.standardError.write(Data("raftctl: key \(key) not found\n".utf8))
      throw ExitCode(1)
    }
    if output.isJSON {
      printJSON([key: JSONValue(value)])
    } else {
      if printKey { print(key) }
      print(value)
    }
  }

  private func runRange() async throws {
    let client = connection.client()
    let answer = try await client.range(
      key, prefix: prefix, limit: limit ?? 0, revision: revision ?? 0, keysOnly: keysOnly,
      countOnly: countOnly, level: ReadLevel(parameter: level)!)
    await client.close()
    guard let answer else {
      let when = revision.map { " at revision \($0)" } ?? ""
      FileHandle.standardError.write(Data("raftctl: key \(key) not found\(when)\n".utf8))
      throw ExitCode(1)
    }
    if output.isJSON { return printServerJSON(answer) }
    if countOnly {
      print(answer["count"]?.intValue ?? 0)
      return
    }
    for kv in answer["kvs"]?.arrayValue ?? [] {
      if prefix || keysOnly || printKey { print(kv["key"]?.stringValue ?? "") }
      if !keysOnly { print(kv["value"]?.stringValue ?? "") }
    }
  }
}

struct Delete: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "del", abstract: "Delete a key.")
  @OptionGroup var connection: Connection
  @OptionGroup var output: Output
  @Argument var key: String

  func run() async throws {
    let client = connection.client()
    let outcome = try await client.delete(key)
    await client.close()
    if output.isJSON {
      printJSON(["deleted": JSONValue(outcome.existed), "revision": JSONValue(outcome.revision)])
    } else {
      print(
        outcome.existed
          ? "deleted (revision \(outcome.revision))" : "not found (revision \(outcome.revision))")
    }
  }
}

struct CompareAndSet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "cas",
    abstract:
      "Set KEY to VALUE only if it now holds --expect OLD, or with --expect-absent only if it is absent.",
    discussion:
      "One of --expect and --expect-absent is required: a compare-and-set always says what it compares. Exit status 1 when the comparison fails."
  )
  @OptionGroup var connection: Connection
  @OptionGroup var output: Output
  @Option(help: "The value the key must hold now.") var expect: String?
  @Flag(help: "Require the key to be absent now (create it only if nobody has).") var expectAbsent = false
  @Argument var key: String
  @Argument var value: String

  func validate() throws {
    guard (expect != nil) != expectAbsent else {
      throw ValidationError(
        "give exactly one of --expect OLD (the value the key must hold now) or --expect-absent (the key must not exist)"
      )
    }
  }

  func run() async throws {
    let client = connection.client()
    let outcome = try await client.compareAndSet(key, expect: expect, value: value)
    await client.close()
    if output.isJSON {
      printJSON([
        "succeeded": JSONValue(outcome.succeeded), "value": JSONValue(outcome.current),
        "revision": JSONValue(outcome.revision),
      ])
    } else if outcome.succeeded {
      print("OK (revision \(outcome.revision))")
    } else {
      print(
        "comparison failed: \(key) holds \(outcome.current.map { "\"\($0)\"" } ?? "nothing") (revision \(outcome.revision))"
      )
    }
    if !outcome.succeeded { throw ExitCode(1) }
  }
}

struct Status: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show each endpoint's view of itself: a table, or -w json for its /status.")
  @OptionGroup var connection: Connection
  @OptionGroup var output: Output

  func run() async throws {
    let client = connection.client()
    var rows: [[String]] = []
    for endpoint in connection.endpoints.list {
      do {
        if output.isJSON {
          print(
            try await client.statusJSON(endpoint: endpoint).trimmingCharacters(in: .whitespacesAndNewlines))
          continue
        }
        let status = try await client.status(endpoint: endpoint)
        let me = status.members.first { $0.id == status.id }
        rows.append([
          endpoint, status.id, status.memberID ?? "-", me?.raddr ?? "-", status.state, "\(status.term)",
          status.leader?.id ?? "none", "\(status.commitIndex)", "\(status.appliedIndex)", "yes",
        ])
      } catch {
        if output.isJSON {
          printJSON(["endpoint": JSONValue(endpoint), "error": JSONValue("\(error)")])
        } else {
          rows.append([endpoint, "-", "-", "-", "-", "-", "-", "-", "-", "no: \(error)"])
        }
      }
    }
    await client.close()
    if !output.isJSON {
      printTable(
        [
          "ENDPOINT", "NAME", "MEMBER ID", "RAFT", "STATE", "TERM", "LEADER", "COMMIT", "APPLIED",
          "REACHABLE",
        ],
        rows)
    }
  }
}

struct Members: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "List the members as the leader sees them, and whether each answers now.")
  @OptionGroup var connection: Connection
  @OptionGroup var output: Output

  func run() async throws {
    let client = connection.client()
    let status = try await client.status()
    var rows: [[String]] = []
    var objects: [JSONValue] = []
    for member in status.members.sorted(by: { $0.id < $1.id }) {
      let role = member.id == status.leader?.id ? "leader" : (member.voter == true ? "voter" : "learner")
      var reachable = "no HTTP address"
      if !member.haddr.isEmpty {
        reachable = (try? await client.status(endpoint: member.haddr)) != nil ? "yes" : "no"
      }
      rows.append([member.id, member.memberID ?? "-", role, member.raddr, member.haddr, reachable])
      objects.append(
        JSONValue([
          "id": JSONValue(member.id), "member_id": JSONValue(member.memberID), "role": JSONValue(role),
          "raddr": JSONValue(member.raddr), "haddr": JSONValue(member.haddr),
          "reachable": JSONValue(reachable == "yes"),
        ]))
    }
    await client.close()
    if output.isJSON {
      print(String(decoding: JSONValue.array(objects).serialized(sortingKeys: true), as: UTF8.self))
    } else {
      printTable(["NAME", "MEMBER ID", "ROLE", "RAFT", "HTTP", "REACHABLE"], rows)
    }
  }
}

struct Join: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Add a member (as the course's /join does).")
  @OptionGroup var connection: Connection
  @Flag(help: "Add as a learner (non-voting).") var learner = false
  @Argument(help: "Member name.") var id: String
  @Argument(help: "Its raft address, host:port.") var raftAddress: String
  @Argument(help: "Its HTTP address, host:port.") var httpAddress: String
  @Option(
    name: .customLong("member-id"),
    help: "Its member id, 16 hex digits (as its /status shows it); default: the legacy id of its name.")
  var memberID: String?

  func run() async throws {
    let client = connection.client()
    try await client.join(
      id: id, raftAddress: raftAddress, httpAddress: httpAddress, voter: !learner, memberID: memberID)
    await client.close()
    print("joined \(id)")
  }
}

struct Transfer: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Hand leadership to a member (default: the most caught-up voter) and wait until it leads.")
  @OptionGroup var connection: Connection
  @Argument(help: "Member name or member id (omit for the most caught-up voter).") var id: String?

  func run() async throws {
    let client = connection.client()
    let leader = try await client.transferLeadership(to: id)
    await client.close()
    print("leader is now \(leader)")
  }
}

struct Remove: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Remove a member.")
  @OptionGroup var connection: Connection
  @Argument(help: "Member name.") var id: String

  func run() async throws {
    let client = connection.client()
    try await client.remove(id: id)
    await client.close()
    print("removed \(id)")
  }
}
