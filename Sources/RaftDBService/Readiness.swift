/// Whether a member can serve linearizable requests now, and if not, why: what `/health` and
/// `/readyz` answer (docs/API.md). A supervisor or load balancer that sends traffic only to ready
/// members must not count a member that is up but cut off: a candidate without a quorum, or a
/// follower that lost its leader, answers every request with an error or a redirect into nowhere.
public struct Readiness: Sendable, Equatable {
  /// The member's role ("leader", "follower", "candidate", "learner").
  public var state: String
  /// The leader's name, when one is known.
  public var leader: String?
  /// Why the member is not ready; nil when it is.
  public var problem: String?

  public var isReady: Bool { problem == nil }

  /// How far the applied index may trail the commit index on a ready member. Applying keeps up
  /// within one turn of the node loop in normal operation; a larger gap means the state machine is
  /// behind (restoring a snapshot, or a slow disk), so reads on it would wait.
  public static let maxApplyLagEntries: UInt64 = 1_000

  /// The rule, from a member's status: a known leader; recent contact with a quorum (a leader: a
  /// quorum of voters acknowledged one of its heartbeat rounds within an election timeout; any
  /// other member: it heard from the leader within an election timeout); and an applied index
  /// within `maxApplyLagEntries` of the commit index.
  public init(of status: MemberStatus) {
    state = status.state
    leader = status.leader?.name
    let timeout = status.electionTimeoutMillis
    let isLeader = status.state == "leader"
    if status.leader == nil && !isLeader {
      problem = "no leader known (this member is a \(status.state))"
    } else if let age = status.quorumContactAgeMillis, age < timeout {
      let lag = status.commitIndex > status.appliedIndex ? status.commitIndex - status.appliedIndex : 0
      problem =
        lag > Self.maxApplyLagEntries
        ? "applied index \(status.appliedIndex) is \(lag) entries behind the commit index \(status.commitIndex)"
        : nil
    } else if isLeader {
      let since = status.quorumContactAgeMillis.map { "for \($0) ms" } ?? "yet in this term"
      problem =
        "no quorum of voters has acknowledged this leader \(since) (election timeout \(timeout) ms)"
    } else {
      let since = status.quorumContactAgeMillis.map { "for \($0) ms" } ?? "yet"
      problem =
        "not heard from the leader \(status.leader?.name ?? "") \(since) (election timeout \(timeout) ms)"
    }
  }
}
