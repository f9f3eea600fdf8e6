import Foundation
import NIOHTTP1
import RaftDBClient
import Testing

/// Issue 11, item 14: when the disk fills, the write in flight is answered (503, storage failed,
/// outcome unknown) before the process exits, and nothing acknowledged is lost. The full disk is
/// the test-only `RAFTDB_TEST_DISK_FULL_AFTER_WAL_WRITES` (ServerOptions.testDiskFullAfterWALWrites).
@Suite(.serialized) struct DiskFullTests {
  @Test func aWriteThatHitsAFullDiskIsAnsweredBeforeTheProcessExits() async throws {
    let harness = try ClusterHarness()
    harness.addNode("node01")
    try harness.start("node01", environment: ["RAFTDB_TEST_DISK_FULL_AFTER_WAL_WRITES": "15"])
    guard await harness.waitForLeader(among: ["node01"]) != nil else {
      Issue.record("node01 did not lead:\n\(harness.log("node01"))")
      return
    }
    // The node raises its cluster version by a log entry of its own some seconds after it leads;
    // waiting for that makes the failing WAL write one of the test's, not the raise.
    guard await harness.waitForClusterVersion(3, among: ["node01"]) else {
      Issue.record("the cluster version did not rise:\n\(harness.log("node01"))")
      return
    }
    var acknowledged: [Int] = []
    var refusal: HTTPResponseData?
    for k in 0..<100 {
      let response: HTTPResponseData
      do {
        response = try await harness.request("node01", .POST, "/key", body: #"{"k\#(k)": "v\#(k)"}"#)
      } catch {
        Issue.record("write \(k) got no answer (\(error)):\n\(harness.log("node01"))")
        return
      }
      guard response.status == .ok else {
        refusal = response
        break
      }
      acknowledged.append(k)
    }
    let answer = try #require(refusal, "no write hit the full disk")
    #expect(answer.status == .serviceUnavailable, "\(answer.status) \(answer.bodyText)")
    #expect(answer.headers.first(name: "X-Raftdb-Outcome") == "unknown")
    let body = (try? JSONSerialization.jsonObject(with: Data(answer.body))) as? [String: Any]
    let message = body?["error"] as? String ?? ""
    #expect(message.contains("storage failed") && message.contains("no space left"), "\(answer.bodyText)")
    #expect(!acknowledged.isEmpty)
    // Crash-only: the process exits with status 70 for its supervisor to restart it.
    #expect(await harness.waitForExit("node01") == 70, "\(harness.log("node01"))")

    // Restarted with room on the disk, it has every acknowledged write.
    try harness.start("node01")
    guard await harness.waitForLeader(among: ["node01"]) != nil else {
      Issue.record("node01 did not lead after the restart:\n\(harness.log("node01"))")
      return
    }
    for k in acknowledged {
      let read = try await harness.request("node01", .GET, "/key/k\(k)")
      #expect(read.status == .ok && read.bodyText.contains("v\(k)"), "k\(k): \(read.status) \(read.bodyText)")
    }
    harness.stopAll()
  }
}
