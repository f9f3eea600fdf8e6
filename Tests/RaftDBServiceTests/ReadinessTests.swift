import Raft
import RaftDBService
import Testing

/// The rule behind `/health` and `/readyz`, one case per reason (docs/API.md): a member is ready
/// only with a known leader, recent contact with a quorum, and its applied index near its commit.
@Suite struct ReadinessTests {
  static let leader = MemberInfo(name: "node01", raftAddress: "h:1", httpAddress: "h:2")

  static func status(
    state: String, leader: MemberInfo?, contactMillis: UInt64?, commit: UInt64 = 10, applied: UInt64 = 10
  ) -> MemberStatus {
    MemberStatus(
      name: "node02", state: state, term: 3, leader: leader, commitIndex: commit, appliedIndex: applied,
      lastLogIndex: commit, snapshotIndex: 0, members: [], keys: 0, memberID: NodeID(2), clusterID: 1,
      quorumContactAgeMillis: contactMillis, electionTimeoutMillis: 1000)
  }

  struct Case: Sendable, CustomTestStringConvertible {
    var name: String
    var status: MemberStatus
    /// A word the reason must contain; nil: ready.
    var reason: String?
    var testDescription: String { name }
  }

  static let cases: [Case] = [
    Case(
      name: "a leader in touch with a quorum",
      status: status(state: "leader", leader: leader, contactMillis: 100)),
    Case(
      name: "a follower that just heard from its leader",
      status: status(state: "follower", leader: leader, contactMillis: 0)),
    Case(
      name: "a learner that hears from its leader",
      status: status(state: "learner", leader: leader, contactMillis: 900)),
    Case(
      name: "a candidate", status: status(state: "candidate", leader: nil, contactMillis: nil),
      reason: "no leader"),
    Case(
      name: "a follower that knows no leader",
      status: status(state: "follower", leader: nil, contactMillis: 5), reason: "no leader"),
    Case(
      name: "a follower cut off from its leader",
      status: status(state: "follower", leader: leader, contactMillis: 1000),
      reason: "not heard from the leader node01"),
    Case(
      name: "a leader without a quorum", status: status(state: "leader", leader: leader, contactMillis: 1500),
      reason: "no quorum"),
    Case(
      name: "a new leader before any round",
      status: status(state: "leader", leader: leader, contactMillis: nil), reason: "no quorum"),
    Case(
      name: "an apply backlog",
      status: status(state: "follower", leader: leader, contactMillis: 10, commit: 5000, applied: 3000),
      reason: "2000 entries behind"),
    Case(
      name: "a small apply lag",
      status: status(state: "follower", leader: leader, contactMillis: 10, commit: 5000, applied: 4500)),
  ]

  @Test(arguments: cases) func theRule(_ item: Case) {
    let readiness = Readiness(of: item.status)
    if let reason = item.reason {
      #expect(!readiness.isReady)
      #expect(readiness.problem?.contains(reason) == true, "\(readiness.problem ?? "ready")")
    } else {
      #expect(readiness.isReady, "\(readiness.problem ?? "")")
    }
  }
}
