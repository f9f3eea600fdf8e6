import ArgumentParser
import Foundation
import JSON
import RaftDBAPI
import RaftDBClient

@main
struct RaftCtl: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "raftctl",
    abstract: "Command-line client and tools for raftdb.",
    discussion: """
      Endpoints are the HTTP addresses of any members (--endpoints or RAFTDB_ENDPOINTS); requests
      follow redirects to the leader and move on to the next endpoint when one is down.
      """,
    subcommands: [
      Put.self, Get.self, Delete.self, CompareAndSet.self, Status.self, Members.self, Join.self, Remove.self,
      Transfer.self, Cluster.self, Bench.self, Verify.self,
    ])
}

struct Endpoints: ParsableArguments {
  @Option(
    help:
      "Comma-separated HTTP addresses of members, host:port or http://host:port (default: $RAFTDB_ENDPOINTS or localhost:8091)."
  )
  var endpoints: String?

  @Option(help: "Give up after this many seconds of retrying (no leader, members down).")
  var timeout: Double = 15

  var list: [String] {
    let text = endpoints ?? ProcessInfo.processInfo.environment["RAFTDB_ENDPOINTS"] ?? "localhost:8091"
    return text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
  }

  func validate() throws {
    guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    for endpoint in list where endpointHostPort(endpoint) == nil {
      throw ValidationError("endpoint \(endpoint) is not host:port or http://host:port")
    }
  }

  func client() throws -> RaftDBClient {
    let list = list
    guard !list.isEmpty else { throw ValidationError("no endpoints; give --endpoints host:port,...") }
    var options = RaftDBClient.Options()
    options.deadline = .milliseconds(Int64(timeout * 1000))
    // A wait for a leader says what it waits for, on stderr so that output stays clean for scripts.
    options.onRetry = { problem in FileHandle.standardError.write(Data("raftctl: \(problem)\n".utf8)) }
    return RaftDBClient(endpoints: list, options: options)
  }
}

/// Prints an object compactly with sorted keys and unescaped slashes (as JSONSerialization's
/// `[.sortedKeys, .withoutEscapingSlashes]` did).
func printJSON(_ members: KeyValuePairs<String, JSONValue>) {
  print(String(decoding: JSONValue(members).serialized(sortingKeys: true), as: UTF8.self))
}

struct Put: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Set keys: raftctl put foo bar, or raftctl put foo=bar baz=qux (one atomic write).")
  @OptionGroup var endpoints: Endpoints
  @Argument(help: "KEY VALUE, or one or more KEY=VALUE pairs.") var arguments: [String]

  func run() async throws {
    var pairs: [String: String] = [:]
    if arguments.count == 2 && !arguments[0].contains("=") {
      pairs[arguments[0]] = arguments[1]
    } else {
      for argument in arguments {
        guard let equals = argument.firstIndex(of: "="), equals != argument.startIndex else {
          throw ValidationError("expected KEY=VALUE, got \(argument)")
        }
        pairs[String(argument[..<equals])] = String(argument[argument.index(after: equals)...])
      }
    }
    guard !pairs.isEmpty else { throw ValidationError("nothing to put") }
    let client = try endpoints.client()
    let revision = try await client.put(pairs)
    await client.close()
    printJSON(["revision": JSONValue(revision)])
  }
}

struct Get: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Read a key.")
  @OptionGroup var endpoints: Endpoints
  @Option(help: "stale, default or consistent.") var level: String = "default"
  @Argument var key: String

  func run() async throws {
    guard let readLevel = ReadLevel(parameter: level) else {
      throw ValidationError("unknown level \(level)")
    }
    let client = try endpoints.client()
    let value = try await client.get(key, level: readLevel)
    await client.close()
    guard let value else {
      FileHandle.standardError.write(Data("key \(key) not found\n".utf8))
      throw ExitCode(1)
    }
    printJSON([key: JSONValue(value)])
  }
}

struct Delete: AsyncParsableCommand {
  static let configuration = CommandConfiguration(commandName: "del", abstract: "Delete a key.")
  @OptionGroup var endpoints: Endpoints
  @Argument var key: String

  func run() async throws {
    let client = try endpoints.client()
    let existed = try await client.delete(key)
    await client.close()
    printJSON(["deleted": JSONValue(existed)])
  }
}

struct CompareAndSet: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "cas",
    abstract:
      "Set KEY to VALUE only if it now holds --expect OLD, or with --expect-absent only if it is absent.",
    discussion:
      "One of --expect and --expect-absent is required: a compare-and-set always says what it compares.")
  @OptionGroup var endpoints: Endpoints
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
    let client = try endpoints.client()
    let outcome = try await client.compareAndSet(key, expect: expect, value: value)
    await client.close()
    printJSON(["succeeded": JSONValue(outcome.succeeded), "value": JSONValue(outcome.current)])
    if !outcome.succeeded { throw ExitCode(1) }
  }
}

struct Status: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Show a node's view of the cluster.")
  @OptionGroup var endpoints: Endpoints

  func run() async throws {
    let client = try endpoints.client()
    for endpoint in endpoints.list {
      do {
        print(try await client.statusJSON(endpoint: endpoint))
      } catch {
        printJSON(["endpoint": JSONValue(endpoint), "error": JSONValue("\(error)")])
      }
    }
    await client.close()
  }
}

struct Members: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "List the members as the leader sees them.")
  @OptionGroup var endpoints: Endpoints

  func run() async throws {
    let client = try endpoints.client()
    let status = try await client.status()
    await client.close()
    for member in status.members.sorted(by: { $0.id < $1.id }) {
      let role = member.id == status.leader?.id ? "leader" : (member.voter == true ? "voter" : "learner")
      print("\(member.id)\t\(role)\traft=\(member.raddr)\thttp=\(member.haddr)")
    }
  }
}

struct Join: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Add a member (as the course's /join does).")
  @OptionGroup var endpoints: Endpoints
  @Flag(help: "Add as a learner (non-voting).") var learner = false
  @Argument(help: "Member name.") var id: String
  @Argument(help: "Its raft address, host:port.") var raftAddress: String
  @Argument(help: "Its HTTP address, host:port.") var httpAddress: String
  @Option(
    name: .customLong("member-id"),
    help: "Its member id, 16 hex digits (as its /status shows it); default: the legacy id of its name.")
  var memberID: String?

  func run() async throws {
    let client = try endpoints.client()
    try await client.join(
      id: id, raftAddress: raftAddress, httpAddress: httpAddress, voter: !learner, memberID: memberID)
    await client.close()
    printJSON(["joined": JSONValue(id)])
  }
}

struct Transfer: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Hand leadership to a member (default: the most caught-up voter) and wait until it leads.")
  @OptionGroup var endpoints: Endpoints
  @Argument(help: "Member name or member id (omit for the most caught-up voter).") var id: String?

  func run() async throws {
    let client = try endpoints.client()
    let leader = try await client.transferLeadership(to: id)
    await client.close()
    printJSON(["leader": JSONValue(leader)])
  }
}

struct Remove: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Remove a member.")
  @OptionGroup var endpoints: Endpoints
  @Argument(help: "Member name.") var id: String

  func run() async throws {
    let client = try endpoints.client()
    try await client.remove(id: id)
    await client.close()
    printJSON(["removed": JSONValue(id)])
  }
}
