import Raft
@_spi(Testing) import RaftStorage
import Testing

/// Pulls the plug (`PowerLossFileSystem`) at random points of seeded workloads, including in the
/// middle of any storage operation: every acknowledged entry, committed snapshot and synced term
/// and vote must survive whatever unsynced data and directory changes the crash keeps or loses.
@Suite struct PowerLossTests {
  @Test(arguments: UInt64(1)...10)
  func everyPromiseSurvivesAPowerLoss(seed: UInt64) throws {
    var random = SplitMix64(seed: seed &* 1_000_003)
    var problems: [String] = []
    for run in 0..<30 {
      let options = FileStorageOptions(segmentSizeBytes: 4096, preallocateSegments: run % 2 == 0)
      let directory = TemporaryDirectory()
      let fs = PowerLossFileSystem()
      var workload = Workload(seed: seed &* 100 &+ UInt64(run))
      let storage = try FileStorage(
        directory: directory.data, options: options, fileSystem: fs, logger: quietLogger)
      _ = try storage.recover()
      // The process dies after a random number of file system calls (or runs to the end).
      fs.callsUntilHalt = random.next() % 3 == 0 ? nil : Int(random.next() % 400)
      let steps = 5 + Int(random.next() % 80)
      var done = 0
      var halted: String?
      run: while done < steps {
        for step in workload.next() {
          do {
            try Workload.perform(step, on: storage)
            workload.succeeded(step)
          } catch {
            workload.noteAttempt(step)
            halted = "\(step)"
            break run
          }
          done += 1
        }
      }
      storage.close()
      fs.callsUntilHalt = nil
      let context = "seed \(seed) run \(run) after \(done) steps\(halted.map { ", dead in \($0)" } ?? "")"
      if run % 3 == 0 {
        // The process died and restarted before the power went: what it recovered, the node treats
        // as durable (and may acknowledge), so recovery must have synced it.
        do {
          let (restarted, recovered) = try reopen(directory.data, options: options, fileSystem: fs)
          problems += workload.violations(in: recovered).map { "\(context), process restart: \($0)" }
          workload.adopt(recovered)
          restarted.close()
        } catch {
          problems.append("\(context), process restart: recovery failed: \(error)")
          continue
        }
      }
      fs.powerLoss(&random)
      do {
        let (reopened, recovered) = try reopen(directory.data, options: options)
        problems += workload.violations(in: recovered).map { "\(context): \($0)" }
        reopened.close()
      } catch {
        problems.append("\(context): recovery failed: \(error)")
      }
    }
    for problem in problems { Issue.record("\(problem)") }
  }
}
