import ArgumentParser
import Dispatch
import Foundation
import JSON
import RaftDBClient

/// `raftctl elect NAME PROPOSAL` and `raftctl elect --listen NAME`: etcdctl's election recipe
/// (etcd's v3election Campaign, Resign and Observe) on raftdb's leases, transactions and watch.
struct Elect: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract:
      "Campaign in a leader election, or with --listen print who leads: raftctl elect NAME [PROPOSAL].",
    discussion: """
      As etcdctl elect does. With PROPOSAL: grants a lease of --ttl seconds and keeps it alive, \
      creates the key NAME/<lease id in hex> holding PROPOSAL under it, and waits until that key has \
      the lowest create revision under NAME/. It then leads: it prints the key and the proposal, one \
      line each, and leads until interrupted (Ctrl-C, SIGTERM), when it resigns (deletes its key and \
      revokes its lease) and exits with status 0; interrupted while waiting, it withdraws the same \
      way. If raftctl dies, the next candidate leads once the lease expires. If the lease is lost, \
      raftctl says so on stderr, withdraws and exits with status 1: another candidate may lead by \
      then. The key's create revision fences what a leader writes (docs/LOCKS.md).

      With --listen: prints the leader's key and proposal when it starts (if there is a leader) and \
      each time the leader changes, until interrupted.
      """)
  @OptionGroup var connection: Connection
  @Option(help: "The lease's time to live in seconds.") var ttl = 10
  @Flag(help: "Print the leader each time it changes, instead of campaigning.") var listen = false
  @Argument(help: "The election's name: the prefix of the candidates' keys.") var name: String
  @Argument(help: "What this candidate proposes: its key's value (not with --listen).") var proposal: String?

  func validate() throws {
    guard ttl > 0 else { throw ValidationError("--ttl must be a positive number of seconds") }
    guard !name.isEmpty else { throw ValidationError("the election needs a NAME") }
    if listen && proposal != nil { throw ValidationError("--listen takes no PROPOSAL") }
    if !listen && proposal == nil { throw ValidationError("give the PROPOSAL to campaign with, or --listen") }
  }

  func run() async throws {
    let prefix = name.hasSuffix("/") ? name : name + "/"
    if let proposal {
      try await campaign(under: prefix, proposing: proposal)
    } else {
      try await observe(prefix)
    }
  }

  /// How a campaign ends.
  private enum End: Sendable {
    case interrupted
    case leaseLost
    case failed(String)
  }

  private func campaign(under prefix: String, proposing proposal: String) async throws {
    let (ends, end) = AsyncStream.makeStream(of: End.self)
    Self.onInterrupt { end.yield(.interrupted) }
    let client = connection.client()
    let grant = try await client.grantLease(ttl: ttl)
    guard let lease = grant["id"]?.intValue else {
      throw RaftDBClientError.badResponse("no lease id in \(grant)")
    }
    let key = prefix + leaseHex(lease)
    let renewals = connection.client()
    let ttl = self.ttl
    let keeper = Task {
      if await Lock.keepAlive(lease, ttl: ttl, client: renewals, holding: "leadership") {
        end.yield(.leaseLost)
      }
    }
    let endpoints = connection.endpoints.list
    let candidate = Task {
      do {
        _ = try await Lock.acquire(
          key, value: proposal, prefix: prefix, lease: lease, client: client, endpoints: endpoints)
        print(key)
        print(proposal)
        fflush(nil)
      } catch is CancellationError {
      } catch {
        end.yield(.failed("\(error)"))
      }
    }
    var outcome = End.interrupted
    for await first in ends {
      outcome = first
      break
    }
    candidate.cancel()
    keeper.cancel()
    await Lock.release(key, lease: lease, client: client)
    switch outcome {
    case .interrupted: return
    case .leaseLost: throw ExitCode.failure
    case .failed(let why): throw RaftDBClientError.unavailable(why)
    }
  }

  /// Prints the leader (the oldest key under `prefix`) now and after every change that replaces it.
  private func observe(_ prefix: String) async throws {
    Watch.exitOnSignals()
    let client = connection.client()
    var shown: (key: String, value: String)?
    while true {
      guard let candidates = try await client.range(prefix, prefix: true, level: .consistent) else {
        throw RaftDBClientError.badResponse("no answer for the range \(prefix)")
      }
      let oldest = (candidates["kvs"]?.arrayValue ?? []).min {
        ($0["create_revision"]?.intValue ?? .max) < ($1["create_revision"]?.intValue ?? .max)
      }
      if let oldest {
        let leader = (key: oldest["key"]?.stringValue ?? "", value: oldest["value"]?.stringValue ?? "")
        if shown?.key != leader.key || shown?.value != leader.value {
          print(leader.key)
          print(leader.value)
          fflush(nil)
          shown = leader
        }
      } else {
        shown = nil
      }
      await PrefixChanges.next(
        after: candidates["revision"]?.intValue ?? 0, under: prefix, endpoints: connection.endpoints.list,
        deletesOnly: false)
    }
  }

  /// Calls `handler` on Ctrl-C and SIGTERM instead of dying, so that a candidate can resign.
  static func onInterrupt(_ handler: @escaping @Sendable () -> Void) {
    for number in [SIGINT, SIGTERM] {
      signal(number, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
      source.setEventHandler(handler: handler)
      source.resume()
      Watch.signalSources.append(source)
    }
  }
}
