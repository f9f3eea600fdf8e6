import Raft
import RaftDBService
import RaftStorage
import Testing

@testable import RaftDBServer

/// Who a node is, for every kind of data directory it can start on (the rules are in
/// `IdentityChoice` and docs/DESIGN.md).
@Suite struct IdentityChoiceTests {
  static let legacy = MemberInfo.legacyNodeID(forName: "node01")

  /// Runs the choice with a seed that reports `seedCluster` (nil: a seed of a build before cluster
  /// ids) and counts how often it was asked; random numbers count up from 0x100.
  func choose(
    stored: NodeIdentity? = nil, legacyOwner: String? = nil, hasState: Bool = false, joining: Bool = false,
    seedCluster: UInt64?? = .some(0xC1)
  ) async throws -> (identity: NodeIdentity, seedAsked: Int) {
    var asked = 0
    var next: UInt64 = 0x100
    let choice = try await IdentityChoice.choose(
      name: "node01", directory: "/data", stored: stored, legacyOwner: legacyOwner, hasState: hasState,
      joining: joining,
      seed: {
        asked += 1
        guard let cluster = seedCluster else { preconditionFailure("the seed must not be asked") }
        return SeedView(clusterID: cluster, members: [])
      },
      random: {
        next += 1
        return next
      })
    return (choice.identity, asked)
  }

  @Test func aNewClusterGetsRandomIds() async throws {
    let (identity, asked) = try await choose()
    #expect(identity == NodeIdentity(name: "node01", memberID: NodeID(0x101), clusterID: 0x102))
    #expect(asked == 0)
  }

  @Test func aJoiningNodeDrawsItsIdAndTakesTheSeedsCluster() async throws {
    let (identity, asked) = try await choose(joining: true)
    #expect(identity == NodeIdentity(name: "node01", memberID: NodeID(0x101), clusterID: 0xC1))
    #expect(asked == 1)
  }

  /// A restart part way through a join asks again as the same member of the same cluster, without
  /// waiting for the seed at startup (the join itself checks the seed's cluster).
  @Test func aRestartedJoinKeepsItsIdentity() async throws {
    let stored = NodeIdentity(name: "node01", memberID: NodeID(0x77), clusterID: 0xC1)
    let (identity, asked) = try await choose(stored: stored, joining: true, seedCluster: .none)
    #expect(identity == stored)
    #expect(asked == 0)
  }

  @Test func aDirectoryWithStateKeepsItsIdentity() async throws {
    let stored = NodeIdentity(name: "node01", memberID: NodeID(0x77), clusterID: 0xC1)
    #expect(try await choose(stored: stored, hasState: true, seedCluster: .none).identity == stored)
    #expect(try await choose(stored: stored, hasState: true, joining: true).identity == stored)
  }

  /// A directory written before identities: only `node-name`, and a log whose configurations carry
  /// name-hash ids. It keeps that id; its cluster id stays unknown.
  @Test func aLegacyDirectoryKeepsItsNameHash() async throws {
    let (identity, asked) = try await choose(legacyOwner: "node01", hasState: true, seedCluster: .none)
    #expect(identity == NodeIdentity(name: "node01", memberID: Self.legacy, clusterID: 0))
    #expect(asked == 0)
  }

  /// State with neither `identity` nor `node-name` is left by no build: the files were lost, and a
  /// guessed id could make the node another member.
  @Test func stateWithoutAnIdentityIsRefused() async throws {
    do {
      _ = try await choose(hasState: true, seedCluster: .none)
      Issue.record("a directory with state and no identity was given one")
    } catch let error as StartupError {
      #expect("\(error)".contains("holds Raft state but no identity file"))
    }
  }

  /// An interrupted legacy join: the old build may already have been added under the name hash.
  @Test func aLegacyDirectoryWithoutStateJoinsUnderItsNameHash() async throws {
    let (identity, _) = try await choose(legacyOwner: "node01", joining: true)
    #expect(identity == NodeIdentity(name: "node01", memberID: Self.legacy, clusterID: 0xC1))
  }

  /// A leader of a build before member ids takes no `member_id` and adds the name hash.
  @Test func aSeedOfAnOlderBuildGetsTheNameHash() async throws {
    let (identity, asked) = try await choose(joining: true, seedCluster: .some(nil))
    #expect(identity == NodeIdentity(name: "node01", memberID: Self.legacy, clusterID: 0))
    #expect(asked == 1)
  }

  /// A directory that was about to join a cluster and then bootstraps one instead gives the new
  /// cluster a new id: two clusters never share one.
  @Test func bootstrappingAfterAnInterruptedJoinChoosesANewCluster() async throws {
    let stored = NodeIdentity(name: "node01", memberID: NodeID(0x77), clusterID: 0xC1)
    let (identity, _) = try await choose(stored: stored)
    #expect(identity == NodeIdentity(name: "node01", memberID: NodeID(0x77), clusterID: 0x101))
  }

  @Test func aDirectoryOfAnotherNameIsRefused() async throws {
    let stored = NodeIdentity(name: "node02", memberID: NodeID(0x77), clusterID: 0xC1)
    for (stored, legacyOwner) in [(stored, nil), (nil, "node02")] as [(NodeIdentity?, String?)] {
      do {
        _ = try await choose(stored: stored, legacyOwner: legacyOwner, hasState: true)
        Issue.record("a directory of node02 was taken by node01")
      } catch let error as StartupError {
        #expect("\(error)".contains("belongs to node node02, not node01"))
      }
    }
  }

  /// Joins conflict when an id or a name is already another member's; repeating a join is not a
  /// conflict.
  @Test func joinsThatConflictAreRefused() throws {
    let node01 = MemberInfo(name: "node01", raftAddress: "h:1", httpAddress: "h:2")
    let configuration = Configuration(members: [
      Member(id: NodeID(0x11), isVoter: true, context: node01.encoded())
    ])
    #expect(try configuration.memberResumedByJoin(of: node01, as: NodeID(0x11))?.id == NodeID(0x11))
    #expect(try configuration.memberResumedByJoin(of: node01.renamed("node02"), as: NodeID(0x22)) == nil)
    let conflicts: [(MemberInfo, NodeID, String)] = [
      (node01.renamed("node02"), NodeID(0x11), "already belongs to member node01"),
      (node01, NodeID(0x22), "the name node01 is taken by member 0000000000000011"),
      (MemberInfo(name: "node01", raftAddress: "h:9", httpAddress: "h:2"), NodeID(0x11), "remove it first"),
    ]
    for (info, id, message) in conflicts {
      do {
        _ = try configuration.memberResumedByJoin(of: info, as: id)
        Issue.record("\(info.name) as \(id.hex) was not refused")
      } catch {
        guard case .conflict(let text) = error else {
          Issue.record("\(error)")
          continue
        }
        #expect(text.contains(message), "\(text)")
      }
    }
  }
}

extension MemberInfo {
  fileprivate func renamed(_ name: String) -> MemberInfo {
    MemberInfo(name: name, raftAddress: raftAddress, httpAddress: httpAddress)
  }
}
