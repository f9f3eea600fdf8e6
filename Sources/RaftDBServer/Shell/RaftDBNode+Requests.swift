import Foundation
import KVStore
import NIOCore
import Raft
import RaftDBAPI
import RaftDBService
import RaftGroup

extension RaftDBNode {
  /// Runs `body` on the node's loop and awaits the future it returns, mapping every failure to a
  /// `ServiceError`.
  func onLoop<T: Sendable>(_ body: @escaping @Sendable () -> EventLoopFuture<T>) async throws(ServiceError)
    -> T
  {
    do {
      return try await loop.flatSubmit(body).get()
    } catch let error as ServiceError {
      throw error
    } catch {
      throw .stopped("node is not running (\(error))")
    }
  }

  var leaderInfo: MemberInfo? {
    raft.knownLeader.flatMap { raft.configuration.info(of: $0) }
  }

  func notLeaderError() -> ServiceError {
    if let leader = raft.knownLeader, leader != id, let info = leaderInfo { return .notLeader(leader: info) }
    return .unavailable("no leader")
  }

  func proposalError(_ error: ProposalError) -> ServiceError {
    switch error {
    case .notLeader: notLeaderError()
    case .leadershipTransferInProgress: .unavailable("leadership transfer in progress; retry")
    case .overloaded: .unavailable("too many uncommitted writes; retry later")
    case .leaderNotReady: .unavailable("the new leader has not committed its first entry yet; retry")
    case .configurationChangePending: .unavailable("another membership change is in progress; retry")
    case .invalidConfigurationChange(let reason): .conflict(describe(reason))
    case .entryTooLarge(let bytes, let limit):
      .tooLarge("request of \(bytes) bytes exceeds the \(limit)-byte limit")
    }
  }

  /// What a proposal is, for the errors that name it.
  enum ProposalKind: String {
    case write
    case membershipChange = "membership change"
  }

  /// What the client hears when the group refused or lost a request. `proposed` is true once the
  /// request is in the log (then a lost outcome is unknown, not refused).
  func serviceError(_ error: GroupError, proposed: Bool = false, kind: ProposalKind = .write) -> ServiceError
  {
    switch error {
    case .proposalRefused(let refusal): proposalError(refusal)
    case .notLeader, .readFailed(.noLeader), .readFailed(.leadershipLost): notLeaderError()
    case .readFailed(.overloaded): .unavailable("too many reads waiting; retry later")
    case .timedOut(.commit):
      .outcomeUnknown(
        "timed out waiting for the write to commit; it may or may not apply — retry with the same Idempotency-Key"
      )
    case .timedOut(.confirmation): .unavailable("timed out confirming leadership for the read")
    case .timedOut(.apply): .unavailable("timed out waiting for the state machine to catch up")
    case .leadershipChanged:
      .outcomeUnknown(
        kind == .write
          ? "leadership changed before the write committed; retry"
          : "leadership changed before the \(kind.rawValue) committed")
    case .replacedBySnapshot: .outcomeUnknown("replaced by a snapshot before the result was known; retry")
    case .stopped(let reason) where proposed:
      .outcomeUnknown(
        "\(reason); the write was proposed and may still be applied: retry with the same Idempotency-Key")
    case .stopped(let reason): .stopped(reason)
    }
  }

  // MARK: Writes

  /// Proposes a validated write on the leader (`ServiceBackend`); the future completes once it is
  /// committed and applied. The request is encoded on the caller's thread, not the node loop.
  public func submitWrite(_ request: KVRequest) -> EventLoopFuture<WriteOutcome> {
    let bytes = request.encoded()
    let command = request.command
    return loop.flatSubmit { self.proposeWrite(bytes, command: command) }
  }

  func proposeWrite(_ bytes: [UInt8], command: KVCommand) -> EventLoopFuture<WriteOutcome> {
    let promise = loop.makePromise(of: WriteOutcome.self)
    let required = command.requiredClusterVersion
    if required > ClusterVersion.initial, case .setClusterVersion = command {
      // The leader's own raise (RaftDBNode+ClusterVersion.swift) is the mechanism, not gated.
    } else if required > machine.clusterVersion {
      // Gated here, on the leader, so that a follower's answer is a redirect rather than a refusal
      // from a view that may lag; every replica would reject it anyway (the replicated gate).
      guard raft.isLeader else {
        promise.fail(notLeaderError())
        return promise.futureResult
      }
      promise.fail(
        ServiceError.failedPrecondition(
          "\(command.operationName) needs cluster version \(required), and the cluster runs version \(machine.clusterVersion): it rises once every member runs a build that supports it (GET /version)"
        ))
      return promise.futureResult
    }
    do {
      try group.propose(bytes) { result in
        switch result {
        case .success(let outcome):
          promise.succeed(WriteOutcome(result: outcome.result, replayed: outcome.isDuplicate))
        case .failure(let error):
          promise.fail(self.serviceError(error, proposed: true))
        }
      }
    } catch {
      promise.fail(serviceError(error))
      return promise.futureResult
    }
    metrics.proposals.increment()
    return promise.futureResult
  }

  // MARK: Reads

  /// A `stale` read, on any node: answered on the caller's thread from the last published read view.
  public func staleRead(_ key: String) -> KVRecord? { readView.withLockedValue { $0 }.get(key) }

  /// A `default` (lease) or `consistent` (ReadIndex) read, only on the leader; the future completes
  /// once its state machine has applied through the read index (see `submitWrite`).
  public func submitRead(_ key: String, level: ReadLevel) -> EventLoopFuture<KVRecord?> {
    precondition(level != .stale, "stale reads need no future: use staleRead")
    return loop.flatSubmit { self.startRead(key, level: level) }
  }

  private func startRead(_ key: String, level: ReadLevel) -> EventLoopFuture<KVRecord?> {
    precondition(level != .stale, "stale reads are served from the read view, off the loop")
    let promise = loop.makePromise(of: KVRecord?.self)
    do {
      try group.read(level == .consistent ? .readIndex : .lease) { result in
        switch result {
        case .success: promise.succeed(self.machine.get(key))
        case .failure(let error): promise.fail(self.serviceError(error))
        }
      }
    } catch {
      promise.fail(serviceError(error))
    }
    return promise.futureResult
  }

  // MARK: Membership

  /// Adds a member the safe way: first as a learner, which receives the log without counting toward
  /// any quorum; then, once it has caught up, promotes it to voter (unless `asVoter` is false).
  /// Repeating the call is harmless: it resumes wherever the member is. `memberID` is the id the
  /// joining node chose for itself (nil: the legacy id of its name, as builds before member ids use).
  public func addMember(_ info: MemberInfo, memberID: NodeID?, asVoter: Bool) async throws(ServiceError)
    -> String
  {
    let memberID = memberID ?? MemberInfo.legacyNodeID(forName: info.name)
    let existing: Member? = try await onLoop {
      self.loop.makeCompletedFuture { () throws(ServiceError) -> Member? in
        guard self.raft.isLeader else { throw self.notLeaderError() }
        return try self.raft.configuration.memberResumedByJoin(of: info, as: memberID)
      }
    }
    if existing == nil {
      // Asked first (which also shows that the node exists and answers), judged on the loop in the
      // turn that proposes the learner (`requireSupportOfTheClusterVersion`), so that no raise of
      // the version slips in between.
      let joinerVersion = try await probeJoiningMember(info)
      try await changeConfiguration(ConfigurationChange(.addLearner, memberID, context: info.encoded())) {
        () throws(ServiceError) in
        try self.requireSupportOfTheClusterVersion(by: info, supporting: joinerVersion)
      }
    }
    guard asVoter else { return existing == nil ? "added as learner" : "already a member" }
    if existing?.isVoter == true { return "already a voter" }
    try await waitForCatchUp(memberID, info: info)
    try await changeConfiguration(ConfigurationChange(.promoteLearner, memberID))
    return "added as voter"
  }

  /// Removes a member by name (or member id, in hex as `/status` shows it, or in decimal).
  public func removeMember(named name: String) async throws(ServiceError) {
    let memberID: NodeID = try await onLoop {
      self.loop.makeCompletedFuture { () throws(ServiceError) -> NodeID in
        guard self.raft.isLeader else { throw self.notLeaderError() }
        guard
          let match = self.raft.configuration.memberInfos.first(where: {
            $0.info.name == name || "\($0.member.id.rawValue)" == name || $0.member.id == NodeID(hex: name)
          })
        else { throw .notFound("no member named \(name)") }
        return match.member.id
      }
    }
    try await changeConfiguration(ConfigurationChange(.removeMember, memberID))
  }

  /// Proposes a membership change and waits for it to commit, retrying while an earlier change (or
  /// the leader's first entry) is still settling.
  /// `precheck` runs on the loop in the turn that proposes, and may refuse.
  private func changeConfiguration(
    _ change: ConfigurationChange, precheck: (@Sendable () throws(ServiceError) -> Void)? = nil
  ) async throws(ServiceError) {
    let deadline = ContinuousClock.now + .milliseconds(options.requestTimeoutMillis)
    while true {
      do {
        try await onLoop { self.proposeConfigurationChange(change, precheck: precheck) }
        loop.execute { self.logger.info("membership change committed: \(self.describe(change))") }
        return
      } catch .unavailable(let why) where ContinuousClock.now < deadline {
        logger.debug("membership change waits: \(why)")
        try? await Task.sleep(for: .milliseconds(options.heartbeatIntervalMillis))
      }
    }
  }

  private func proposeConfigurationChange(
    _ change: ConfigurationChange, precheck: (@Sendable () throws(ServiceError) -> Void)?
  ) -> EventLoopFuture<Void> {
    let promise = loop.makePromise(of: Void.self)
    do throws(ServiceError) {
      try precheck?()
    } catch {
      promise.fail(error)
      return promise.futureResult
    }
    do {
      try group.proposeConfigurationChange(change) { result in
        promise.completeWith(
          result.mapError { self.serviceError($0, proposed: true, kind: .membershipChange) })
      }
    } catch {
      promise.fail(serviceError(error))
    }
    return promise.futureResult
  }

  /// How long a learner may stay silent after it was added — no append accepted, no snapshot under
  /// way to it — before its join is rolled back (docs/API.md). This catches a join the leader could
  /// not probe first (one without an HTTP address) whose node never answers; a live node answers
  /// within a few heartbeats.
  static let joinSilenceMillis = 10_000

  /// Waits until a learner's log reaches the commit index the leader had when the wait began;
  /// removes the learner again if it never answers at all (`joinSilenceMillis`).
  private func waitForCatchUp(_ memberID: NodeID, info: MemberInfo) async throws(ServiceError) {
    let target: UInt64 = try await onLoop { self.loop.makeSucceededFuture(self.raft.commitIndex) }
    let began = ContinuousClock.now
    let deadline = began + .milliseconds(max(options.requestTimeoutMillis, 30_000))
    var answered = false
    while ContinuousClock.now < deadline {
      let progress: FollowerStatus? = try await onLoop {
        self.loop.makeCompletedFuture { () throws(ServiceError) -> FollowerStatus? in
          guard self.raft.isLeader else { throw self.notLeaderError() }
          return self.raft.status.followers.first { $0.id == memberID }
        }
      }
      if let progress {
        if progress.matchIndex >= target { return }
        // An accepted append sets the match index; a snapshot is sent only after the learner
        // answered a probe.
        answered = answered || progress.matchIndex > 0 || progress.state.hasPrefix("snapshot")
      }
      if !answered && ContinuousClock.now - began >= .milliseconds(Self.joinSilenceMillis) {
        try await changeConfiguration(ConfigurationChange(.removeMember, memberID))
        throw .failedPrecondition(
          "\(info.name) never answered at its raft address \(info.raftAddress) within \(Self.joinSilenceMillis / 1000) s of being added as a learner, so it was removed again; start the node, then join it again"
        )
      }
      try? await Task.sleep(for: .milliseconds(options.heartbeatIntervalMillis))
    }
    throw .unavailable("the new member is still catching up; retry the join")
  }

  // MARK: Leadership

  /// Hands leadership to `name` (nil: the most caught-up voter that is recently active) and waits
  /// until this node has seen another leader take over, as etcd's move-leader does.
  public func transferLeadership(to name: String?) async throws(ServiceError) -> MemberInfo {
    let target: NodeID = try await onLoop {
      self.loop.makeCompletedFuture { () throws(ServiceError) -> NodeID in
        guard self.raft.isLeader else { throw self.notLeaderError() }
        let status = self.raft.status
        let target: NodeID?
        if let name {
          guard
            let match = status.configuration.memberInfos.first(where: {
              $0.info.name == name || $0.member.id == NodeID(hex: name)
            })
          else { throw .notFound("no member named \(name)") }
          target = match.member.id
        } else {
          target = self.mostCaughtUpVoter()
        }
        guard let target else { throw .unavailable("no caught-up voter to hand leadership to") }
        do throws(LeadershipTransferError) {
          try self.group.transferLeadership(to: target)
        } catch {
          switch error {
          case .notLeader: throw self.notLeaderError()
          case .notAVoter: throw .invalidArgument("\(self.name(of: target)) is not a voter")
          case .alreadyLeader: throw .invalidArgument("\(self.name(of: target)) is already the leader")
          }
        }
        self.logger.info("handing leadership to \(self.name(of: target)) on request")
        return target
      }
    }
    let deadline =
      ContinuousClock.now
      + .milliseconds(max(options.requestTimeoutMillis, 2 * options.electionTimeoutMillis))
    while ContinuousClock.now < deadline {
      let leader: MemberInfo? = try await onLoop {
        self.loop.makeSucceededFuture(self.raft.knownLeader == target ? self.leaderInfo : nil)
      }
      if let leader { return leader }
      try? await Task.sleep(for: .milliseconds(max(1, options.heartbeatIntervalMillis / 2)))
    }
    throw .outcomeUnknown("leadership did not move to the target in time; see /status")
  }

  // MARK: Status

  /// The service over this node, which the protocol adapters call.
  public var service: KVService {
    KVService(backend: self, limits: options.kvLimits, maxResponseBytes: options.maxResponseBytes)
  }

  /// The node's state for `/status`, `/health` and `/livez`, as a future (see `submitWrite`).
  public func submitStatus() -> EventLoopFuture<MemberStatus> { loop.flatSubmit { self.statusReport() } }

  public func memberHeader() -> MemberHeader {
    MemberHeader(
      clusterID: clusterID, memberID: id.rawValue, raftTerm: publishedTerm.load(ordering: .relaxed))
  }

  private func statusReport() -> EventLoopFuture<MemberStatus> {
    let status = self.raft.status
    return self.loop.makeSucceededFuture(
      MemberStatus(
        name: self.identity.name, state: self.roleName(status.role), term: status.term,
        leader: self.leaderInfo,
        commitIndex: status.commitIndex, appliedIndex: self.machine.appliedIndex,
        lastLogIndex: status.lastIndex,
        snapshotIndex: status.snapshotIndex,
        members: status.configuration.memberInfos.map { ($0.info, $0.member.isVoter, $0.member.id) },
        keys: self.machine.count, memberID: id, clusterID: clusterID,
        quorumContactAgeMillis: raft.quorumContactAgeTicks.map {
          $0 * UInt64(options.heartbeatIntervalMillis)
        },
        electionTimeoutMillis: UInt64(options.electionTimeoutTicks * options.heartbeatIntervalMillis)))
  }
}

extension RaftDBNode: ServiceBackend {}
