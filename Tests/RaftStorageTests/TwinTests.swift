import Raft
@_spi(Testing) import RaftStorage
import Testing

/// `MemoryStorage` must behave like `FileStorage`: the same seeded workloads, including refused
/// batches and restarts, give the same answers and the same recovered state.
@Suite struct TwinTests {
  static func outcome(_ body: () throws(StorageError) -> Void) -> String {
    guard let error = storageError(body) else { return "ok" }
    if case .misuse = error { return "misuse" }
    return "error \(error)"
  }

  @Test(arguments: UInt64(1)...12)
  func fileAndMemoryAgree(seed: UInt64) throws {
    let file = try Harness(.file, options: smallSegments)
    let memory = try Harness(.memory, options: smallSegments)
    var workload = Workload(seed: seed)
    var random = SplitMix64(seed: seed &* 77)
    for step in 0..<160 {
      for action in workload.next() {
        let results = [file, memory].map { harness in
          Self.outcome { () throws(StorageError) in try Workload.perform(action, on: harness.storage) }
        }
        #expect(results[0] == "ok" && results[1] == "ok", "step \(step) \(action): \(results)")
        workload.succeeded(action)
        if case .sync = action {
          #expect(try file.storage.sync() == memory.storage.sync())
        }
      }
      if random.next() % 10 == 0 {
        // A batch the log must refuse, identically.
        let last = workload.lastIndex
        let bad: [LogEntry] =
          switch random.next() % 3 {
          case 0: [Verifiable.entry(last + 2, term: workload.lastTerm)]
          case 1:
            [Verifiable.entry(last + 1, term: max(workload.lastTerm, 1) - 1)].filter { _ in
              workload.lastTerm > 1
            }
          default:
            [
              Verifiable.entry(last + 1, term: workload.lastTerm + 1),
              Verifiable.entry(last + 3, term: workload.lastTerm + 1),
            ]
          }
        if !bad.isEmpty {
          let results = [file, memory].map { harness in
            Self.outcome { () throws(StorageError) in try harness.storage.write(PersistBatch(entries: bad)) }
          }
          #expect(results == ["misuse", "misuse"], "step \(step): \(results)")
        }
      }
      if random.next() % 12 == 0 {
        try file.storage.sync()
        try memory.storage.sync()
        workload.succeeded(.sync)
        let a = try file.restart()
        let b = try memory.restart()
        expectLog(a.stored.entries, b.stored.entries, "seed \(seed) step \(step)")
        #expect(a.stored.snapshot == b.stored.snapshot)
        #expect(a.snapshot == b.snapshot)
        #expect(a.stored.hardState.term == b.stored.hardState.term)
        #expect(a.stored.hardState.vote == b.stored.hardState.vote)
        #expect(workload.violations(in: a).isEmpty, "\(workload.violations(in: a))")
        #expect(workload.violations(in: b).isEmpty, "\(workload.violations(in: b))")
      }
    }
  }
}
