import ArgumentParser
import Dispatch
import Foundation
import JSON
import RaftDBClient

struct Watch: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Print the changes to a key, or with --prefix to every key under it, as they happen.",
    discussion: """
      Prints, as etcdctl watch does, each change as a line PUT or DELETE, then (with --prev-kv) the \
      key and value before it, then the key and its new value (empty for a DELETE); with \
      --progress-notify, "progress notify: R" when the member says everything up to revision R has \
      been sent. -w json prints each message of the server's stream (GET /watch/{key}, docs/API.md) \
      as one line: {"revision", "events"} and, with --progress-notify, {"revision"}.

      --rev R starts at revision R, replaying the history from there; without it the watch starts \
      now. When the connection drops (the member stopped, restarted or is unreachable), raftctl \
      says so on stderr and resumes on the next endpoint after the last revision it printed, so \
      that no change is missed or printed twice; it gives up (exit status 69) when no endpoint has \
      taken the watch for --timeout seconds. A member that cancels a watch whose reader fell behind \
      is resumed from where it stopped. If the revisions the watch needs have been compacted, it \
      says so and exits with status 2. Interrupted (Ctrl-C, SIGTERM), it exits with status 0.
      """)
  @OptionGroup var connection: Connection
  @OptionGroup var output: Output
  @Flag(help: "Watch every key that starts with KEY.") var prefix = false
  @Option(name: .customLong("rev"), help: "Start at this revision (replaying the history since).")
  var revision: Int?
  @Flag(help: "Print each change's previous key and value too.") var prevKv = false
  @Option(help: "Leave out some changes: noput (print only deletes) or nodelete (only puts).")
  var filter: String?
  @Flag(help: "Print the member's periodic progress notifications.") var progressNotify = false
  @Argument(help: "The key (with --prefix: the prefix).") var key: String

  func validate() throws {
    if let revision, revision <= 0 { throw ValidationError("--rev must be a positive revision") }
    if let filter, filter != "noput" && filter != "nodelete" {
      throw ValidationError("unknown --filter \(filter); use noput or nodelete")
    }
    guard !key.isEmpty else { throw ValidationError("give the key to watch") }
  }

  func run() async throws {
    Self.exitOnSignals()
    var watcher = Watcher(
      command: self, endpoints: connection.endpoints.list,
      nextRevision: revision.map(Int64.init))
    try await watcher.run()
  }

  /// The path of the watch, without the revision to start at.
  var path: String {
    let escaped =
      key.addingPercentEncoding(
        withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#"))) ?? key
    var query: [String] = []
    if prefix { query.append("prefix=true") }
    if prevKv { query.append("prev_kv=true") }
    if let filter { query.append("filter=\(filter)") }
    if progressNotify { query.append("progress_notify=true") }
    return "/watch/\(escaped)" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
  }

  /// Ctrl-C and SIGTERM end the watch at once with status 0, what was printed flushed.
  static func exitOnSignals() {
    for number in [SIGINT, SIGTERM] {
      signal(number, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
      source.setEventHandler {
        fflush(nil)
        Foundation.exit(0)
      }
      source.resume()
      signalSources.append(source)
    }
  }

  nonisolated(unsafe) static var signalSources: [any DispatchSourceSignal] = []
}

/// The watch across connections: where it resumes and on which endpoint.
private struct Watcher {
  let command: Watch
  let endpoints: [String]
  /// The first revision not yet printed, once known (from --rev, or the first message's revision):
  /// a reconnection asks for it with `Last-Event-ID` (the revision before it).
  var nextRevision: Int64?
  var index = 0

  init(command: Watch, endpoints: [String], nextRevision: Int64?) {
    self.command = command
    self.endpoints = endpoints
    self.nextRevision = nextRevision
  }

  enum Outcome {
    /// The member cancelled the watch for a reason a new watch from `nextRevision` gets past.
    case resume
    /// The stream ended or failed (why).
    case lost(String)
  }

  mutating func run() async throws {
    let timeout = Duration.milliseconds(Int64(command.connection.timeout * 1000))
    var lastOpen = ContinuousClock.now
    var backoff = Duration.milliseconds(50)
    while true {
      let endpoint = endpoints[index % endpoints.count]
      let opened = OpenFlag()
      let outcome: Outcome
      do {
        outcome = try await watchOnce(endpoint, opened: opened)
      } catch let exit as ExitCode {
        throw exit
      } catch let error as RaftDBClientError where error.status != 503 {
        throw error
      } catch let error as SSEError {
        throw RaftDBClientError.badResponse("\(endpoint): \(error)")
      } catch {
        outcome = .lost(Self.describe(error))
      }
      if opened.value {
        lastOpen = ContinuousClock.now
        backoff = .milliseconds(50)
      }
      switch outcome {
      case .resume:
        continue
      case .lost(let why):
        guard ContinuousClock.now - lastOpen < timeout else {
          throw RaftDBClientError.unavailable(
            "no endpoint took the watch for \(command.connection.timeout) s; last: \(endpoint): \(why)")
        }
        index += 1
        let next = endpoints[index % endpoints.count]
        let from = nextRevision.map { "from revision \($0)" } ?? "from now"
        Self.say("watch on \(endpoint) lost (\(why)); retrying on \(next) \(from)")
        if !opened.value {
          try await Task.sleep(for: backoff)
          backoff = min(backoff * 2, .seconds(1))
        }
      }
    }
  }

  /// One connection's worth of the watch: prints its messages and tracks the revision to resume at.
  mutating func watchOnce(_ endpoint: String, opened: OpenFlag) async throws -> Outcome {
    guard let (host, port) = splitHostPort(endpoint) else {
      throw RaftDBClientError.unavailable("bad endpoint \(endpoint)")
    }
    var headers: [(String, String)] = []
    if let nextRevision { headers.append(("Last-Event-ID", String(nextRevision - 1))) }
    var outcome = Outcome.lost("the member ended the stream")
    let json = command.output.isJSON
    try await EventStream.get(
      host: host, port: port, path: command.path, headers: headers, onOpen: { opened.set() }
    ) { message in
      let data = (try? JSONParser.parse(Array(message.data.utf8))) ?? .null
      let revision = data["revision"]?.intValue.map(Int64.init)
      switch message.event {
      case "created":
        // A watch from now starts after the revision it was created at.
        if nextRevision == nil, let revision { nextRevision = revision + 1 }
      case "events":
        if json {
          print(String(decoding: data.serialized(), as: UTF8.self))
        } else {
          Self.printEvents(data)
        }
        fflush(nil)
        if let id = message.id.flatMap(Int64.init) { nextRevision = id + 1 }
      case "progress":
        if json {
          print(String(decoding: data.serialized(), as: UTF8.self))
        } else if command.progressNotify {
          print("progress notify: \(revision ?? 0)")
        }
        fflush(nil)
        if let id = message.id.flatMap(Int64.init) { nextRevision = id + 1 }
      case "canceled":
        let reason = data["reason"]?.stringValue ?? message.data
        let compacted = data["compact_revision"]?.intValue ?? 0
        if compacted > 0 {
          Self.say("watch was canceled (\(reason); compacted revision \(compacted))")
          throw ExitCode(2)
        }
        if let resume = data["resume_revision"]?.intValue, resume > 0 { nextRevision = Int64(resume) }
        let from = nextRevision.map { "from revision \($0)" } ?? "from now"
        Self.say("watch on \(endpoint) was canceled (\(reason)); resuming \(from)")
        outcome = .resume
        return false
      default:
        break
      }
      return true
    }
    return outcome
  }

  /// As etcdctl prints a watch response: per event its type, the previous key and value if the
  /// server sent them, then the key and value.
  static func printEvents(_ data: JSONValue) {
    for event in data["events"]?.arrayValue ?? [] {
      print(event["type"]?.stringValue ?? "")
      if let previous = event["prev_kv"], !previous.isNull {
        print(previous["key"]?.stringValue ?? "")
        print(previous["value"]?.stringValue ?? "")
      }
      print(event["kv"]?["key"]?.stringValue ?? "")
      print(event["kv"]?["value"]?.stringValue ?? "")
    }
  }

  static func describe(_ error: any Error) -> String {
    switch error {
    case let error as RaftDBClientError: "\(error)"
    case let error as HTTPClientError: "\(error)"
    default: describeConnectionError(error)
    }
  }

  static func say(_ line: String) {
    FileHandle.standardError.write(Data("raftctl: \(line)\n".utf8))
  }
}

/// Whether a connection got as far as a 2xx head (set from the event loop).
final class OpenFlag: @unchecked Sendable {
  // Unchecked: `value` is behind `lock`.
  private let lock = NSLock()
  private var opened = false
  var value: Bool { lock.withLock { opened } }
  func set() { lock.withLock { opened = true } }
}
