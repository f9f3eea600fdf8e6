import Foundation
import Testing

/// `raftctl elect` on a real three-node cluster, as etcdctl elect: candidates lead one at a time in
/// the order they campaigned; a leader interrupted resigns and the next one leads; a candidate
/// interrupted while waiting withdraws; a leader that dies (kill -9) is succeeded once its lease
/// expires; `--listen` prints every leader in turn.
@Suite(.serialized) struct RaftctlElectTests {
  @Test func candidatesLeadInTurnAndListenersSeeEachLeader() async throws {
    let harness = try ClusterHarness()
    let names = ["node01", "node02", "node03"]
    let leader = try await harness.startCluster(names)
    try #require(await MultiVersionHTTPTests.waitForVersion3(harness, names), "\(harness.log(leader))")
    let endpoints = ["--endpoints", names.map { "http://\(harness.spec($0).http)" }.joined(separator: ",")]
    func elect(_ label: String, _ arguments: [String]) throws -> BackgroundRaftctl {
      try BackgroundRaftctl(harness, label, ["elect"] + arguments + endpoints)
    }
    func count() throws -> String {
      try ClusterHarness.runRaftctl(["get", "jobs/", "--prefix", "--count-only"] + endpoints).stdout
    }

    let usage = try ClusterHarness.runRaftctl(["elect", "jobs"] + endpoints)
    #expect(usage.status != 0 && usage.stderr.contains("PROPOSAL"), "\(usage.stderr)")

    let alpha = try elect("alpha", ["jobs", "alpha"])
    defer { alpha.stop() }
    #expect(await harness.eventually { alpha.lines().count == 2 }, "\(alpha.stdout())\(alpha.stderr())")
    let alphaLines = alpha.lines()
    #expect(
      alphaLines.count == 2 && alphaLines[0].hasPrefix("jobs/") && alphaLines[1] == "alpha", "\(alphaLines)")

    let listener = try elect("listen", ["jobs", "--listen"])
    defer { listener.stop() }
    #expect(
      await harness.eventually { listener.lines() == alphaLines }, "\(listener.stdout())\(listener.stderr())")

    let beta = try elect("beta", ["jobs", "beta", "--ttl", "3"])
    defer { beta.stop() }
    let gamma = try elect("gamma", ["jobs", "gamma"])
    defer { gamma.stop() }
    #expect(await harness.eventually { (try? count()) == "3\n" }, "\(beta.stderr())\(gamma.stderr())")
    // The waiting candidates and the listener wait on watches of the prefix, not by polling.
    func watchers() async -> Double {
      var total = 0.0
      for name in names { total += await harness.metric("raftdb_watchers", name) }
      return total
    }
    let waiting = await harness.eventually { await watchers() == 3 }
    let open = await watchers()
    #expect(waiting, "watches open: \(open)")
    // A waiting candidate interrupted withdraws: its key goes, and it exits with status 0.
    gamma.signal(SIGTERM)
    #expect(await gamma.exitStatus(within: .seconds(15)) == 0, "\(gamma.stderr())")
    #expect(gamma.lines().isEmpty, "\(gamma.stdout())")
    #expect(try count() == "2\n")
    #expect(beta.lines().isEmpty, "beta led while alpha did: \(beta.stdout())")

    // The leader interrupted resigns; the next candidate leads, and the listener sees it.
    let delta = try elect("delta", ["jobs", "delta"])
    defer { delta.stop() }
    #expect(await harness.eventually { (try? count()) == "3\n" }, "\(delta.stderr())")
    alpha.signal(SIGTERM)
    #expect(await alpha.exitStatus(within: .seconds(15)) == 0, "\(alpha.stderr())")
    #expect(await harness.eventually { beta.lines().count == 2 }, "\(beta.stdout())\(beta.stderr())")
    let betaLines = beta.lines()
    #expect(betaLines.count == 2 && betaLines[1] == "beta", "\(betaLines)")
    #expect(delta.lines().isEmpty, "\(delta.stdout())")

    // A leader that dies keeps its key until its lease (3 s) expires; then the next one leads.
    beta.stop()
    #expect(
      await harness.eventually(timeout: .seconds(30)) { delta.lines().count == 2 }, "\(delta.stderr())")
    let deltaLines = delta.lines()
    #expect(deltaLines.count == 2 && deltaLines[1] == "delta", "\(deltaLines)")
    #expect(
      await harness.eventually { listener.lines() == alphaLines + betaLines + deltaLines },
      "\(listener.stdout())\(listener.stderr())")
    delta.signal(SIGTERM)
    #expect(await delta.exitStatus(within: .seconds(15)) == 0, "\(delta.stderr())")
    #expect(try count() == "0\n")
  }
}
