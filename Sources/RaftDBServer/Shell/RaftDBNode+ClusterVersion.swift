import Foundation
import JSON
import KVStore
import NIOCore
import NIOHTTP1
import Raft
import RaftDBAPI
import RaftDBClient
import RaftDBService

/// Cluster version gating, as etcd does it: the leader asks every member over HTTP which cluster
/// version its build supports (`GET /version`) and, once all of them support a newer one than the
/// cluster runs, proposes it through the log. Commands that need a version are refused by the
/// service until the log has agreed it (`KVService.requireClusterVersion`), so no member ever
/// rejects an entry the others apply. A member that learns from the log of a version its build does
/// not support stops and asks for an upgrade; a join of such a build is refused.
extension RaftDBNode {
  /// The newest cluster version this node's build supports.
  var supportedClusterVersion: UInt32 { machine.supportedClusterVersion }

  /// What `GET /version` says, from the last published read view (any thread).
  public func versions() -> VersionInfo {
    VersionInfo(
      server: options.testSupportedClusterVersion ?? ClusterVersion.latest,
      cluster: readView.withLockedValue { $0.clusterVersion })
  }

  /// Starts asking, every `clusterVersionCheckMillis` while this node leads, whether the cluster
  /// version can rise.
  func startClusterVersionMonitor() {
    let interval = Duration.milliseconds(options.clusterVersionCheckMillis)
    let task = Task { [weak self] in
      while !Task.isCancelled {
        do {
          try await Task.sleep(for: interval)
        } catch {
          return  // Cancelled: the node is shutting down.
        }
        guard let self else { return }
        await self.raiseClusterVersionIfEveryMemberSupportsIt()
      }
    }
    versionMonitor.withLockedValue { $0 = task }
  }

  /// Stops the monitor and waits for a round in progress, before the loops it uses shut down.
  func stopClusterVersionMonitor() async {
    let task = versionMonitor.withLockedValue { $0 }
    task?.cancel()
    await task?.value
  }

  /// One round of the monitor: on the leader, asks every other member for its supported version
  /// and proposes the lowest of them (and this node's) if it is above the cluster's. A member that
  /// does not answer holds the version where it is. The proposal is made on the loop in the turn
  /// that checks that the members are still those polled and no other raise is in flight; from
  /// then until it is applied, joins are judged against the version it raises to.
  func raiseClusterVersionIfEveryMemberSupportsIt() async {
    typealias Plan = (
      current: UInt32, supported: UInt32, configuration: Configuration,
      members: [(name: String, http: String)]
    )
    let plan: Plan? = try? await onLoop {
      self.loop.makeSucceededFuture(
        self.stopped || !self.raft.isLeader || self.clusterVersionRaiseInFlight != nil
          || self.machine.clusterVersion >= self.supportedClusterVersion
          ? nil
          : (
            self.machine.clusterVersion, self.supportedClusterVersion, self.raft.configuration,
            self.raft.configuration.memberInfos.filter { $0.member.id != self.id }.map {
              ($0.info.name, $0.info.httpAddress)
            }
          ))
    }
    guard let plan else { return }
    var lowest = plan.supported
    for member in plan.members {
      guard let version = await supportedVersion(ofMemberAt: member.http) else {
        let logger = self.logger
        loop.execute {
          // The log is the loop's, like the node's other rate-limited logs.
          self.clusterVersionHeldLog.record(member.name, (member.name, plan.current)) { event, heldBack in
            logger.info(
              "cluster version stays \(event.1): \(event.0) did not say which cluster version it supports (GET /version)",
              metadata: heldBack > 0 ? ["held_back": "\(heldBack)"] : [:])
          }
        }
        return
      }
      lowest = min(lowest, version)
    }
    guard lowest > plan.current else { return }
    let target = lowest
    let request = KVRequest(
      command: .setClusterVersion(target),
      proposedAtMillis: UInt64(max(0, Date().timeIntervalSince1970 * 1000)))
    let bytes = request.encoded()
    let proposed: EventLoopFuture<WriteOutcome> = loop.flatSubmit {
      guard self.raft.isLeader, self.raft.configuration == plan.configuration,
        self.clusterVersionRaiseInFlight == nil, self.machine.clusterVersion < target
      else {
        return self.loop.makeFailedFuture(ServiceError.unavailable("the members changed during the poll"))
      }
      self.clusterVersionRaiseInFlight = target
      return self.proposeWrite(bytes, command: request.command).always { _ in
        self.clusterVersionRaiseInFlight = nil
      }
    }
    do {
      _ = try await proposed.get()
      logger.info("cluster version raised from \(plan.current) to \(target): every member supports it")
    } catch {
      logger.info("raising the cluster version to \(target) did not happen (\(error)); will retry")
    }
  }

  /// How long the leader keeps asking a joining node's `GET /version` before it refuses the join
  /// (docs/API.md): a node that has just started may open its HTTP listener a moment after it
  /// sends its join, and the refusal must still come long before a client gives up.
  static let joinProbeMillis = 2_000

  /// Asks a joining node, before it becomes a learner, which cluster version its build supports.
  /// The answer also shows that the node exists and is this far reachable: a learner that never
  /// answers would stay in the configuration for good. Nil for a join without an HTTP address (the
  /// course's `{"id", "addr"}` form), which cannot be asked.
  func probeJoiningMember(_ info: MemberInfo) async throws(ServiceError) -> UInt32? {
    guard !info.httpAddress.isEmpty else { return nil }
    let deadline = ContinuousClock.now + .milliseconds(Self.joinProbeMillis)
    while true {
      if let version = await supportedVersion(ofMemberAt: info.httpAddress) { return version }
      guard ContinuousClock.now < deadline else { break }
      try? await Task.sleep(for: .milliseconds(200))
    }
    throw .failedPrecondition(
      "\(info.name) does not answer at its HTTP address \(info.httpAddress) (GET /version, asked for \(Self.joinProbeMillis / 1000) s), so it was not added; start the node first (with -join it asks to be added by itself), or check its -haddr"
    )
  }

  /// Refuses to add a member whose build does not support the cluster's version (or the version a
  /// raise in flight sets): it would reject commands the others apply. Runs on the loop, in the
  /// turn that proposes the member, with the version the joiner said it supports
  /// (`probeJoiningMember`; nil: it names no HTTP address). While the cluster runs the initial
  /// version every build qualifies, and the monitor will not raise it past a member it cannot ask.
  func requireSupportOfTheClusterVersion(by info: MemberInfo, supporting supported: UInt32?)
    throws(ServiceError)
  {
    let cluster = max(machine.clusterVersion, clusterVersionRaiseInFlight ?? 0)
    guard cluster > ClusterVersion.initial else { return }
    guard !info.httpAddress.isEmpty else {
      throw .failedPrecondition(
        "\(info.name) names no HTTP address, and the cluster runs version \(cluster): a member must answer GET /version before it joins (give it -haddr)"
      )
    }
    guard let supported else {
      throw .unavailable(
        "cannot ask \(info.name) at \"\(info.httpAddress)\" which cluster version it supports (GET /version), and the cluster runs version \(cluster); retry once it answers"
      )
    }
    guard supported >= cluster else {
      throw .failedPrecondition(
        "\(info.name) supports cluster version \(supported), but the cluster runs version \(cluster): upgrade it before it joins"
      )
    }
  }

  /// The cluster version the member serving HTTP at `address` supports: what its `GET /version`
  /// says, 1 if it has no such route (a build from before cluster versions), nil if it cannot be
  /// asked or answers anything else.
  func supportedVersion(ofMemberAt address: String) async -> UInt32? {
    guard let (host, port) = splitHostPort(address) else { return nil }
    do {
      let connection = try await HTTPConnection.connect(
        host: host, port: port, group: networkGroup, connectTimeout: .seconds(1), maxResponseBytes: 4096)
      let response: HTTPResponseData
      do {
        response = try await connection.send(
          HTTPRequestData(method: .GET, path: "/version"), timeout: .seconds(2))
      } catch {
        await connection.close()  // A hung member must not leak a socket per poll.
        return nil
      }
      await connection.close()
      switch response.status {
      case .ok:
        return (try? JSONParser.parse(response.body))?["server"]?.uint64Value.flatMap { UInt32(exactly: $0) }
      case .notFound: return ClusterVersion.initial
      default: return nil
      }
    } catch {
      return nil
    }
  }

  /// After applying: a log that raised the cluster version above this build's stops the node, as
  /// etcd refuses to run below its cluster's version (a supervisor restarting it finds the same).
  func stopIfTheClusterOutgrewThisBuild() {
    guard let version = machine.unsupportedClusterVersion else { return }
    fail(
      "the cluster runs version \(version), but this build supports cluster versions up to \(supportedClusterVersion): upgrade this member"
    )
  }
}
