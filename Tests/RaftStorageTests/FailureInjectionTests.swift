import Raft
@_spi(Testing) import RaftStorage
import Synchronization
import Testing

#if canImport(Glibc)
  import Glibc
#endif

/// Failed writes and syncs, short writes and a full disk: the error surfaces, the store stops, and a
/// reopen finds everything that was acknowledged as durable, with nothing corrupt.
@Suite struct FailureInjectionTests {
  struct Outcome {
    var error: StorageError?
    var failedStep: String?
    var steps = 0
  }

  /// Runs a seeded workload until it finishes or a call fails, then checks the store refuses more
  /// writes, reopens the directory without faults and checks the promises.
  @discardableResult
  static func runToFailure(
    seed: UInt64, steps: Int, options: FileStorageOptions, arm: (FaultInjectingFileSystem) -> Void,
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws -> Outcome {
    let directory = TemporaryDirectory()
    let fs = FaultInjectingFileSystem()
    var workload = Workload(seed: seed)
    var outcome = Outcome()
    do {
      let storage = try FileStorage(
        directory: directory.data, options: options, fileSystem: fs, logger: quietLogger)
      _ = try storage.recover()
      arm(fs)
      run: while outcome.steps < steps {
        for step in workload.next() {
          outcome.steps += 1
          do {
            try Workload.perform(step, on: storage)
            workload.succeeded(step)
          } catch {
            workload.noteAttempt(step)
            outcome.error = error
            outcome.failedStep = "\(step)"
            break run
          }
        }
      }
      if let error = outcome.error {
        switch error {
        case .io, .noSpace: break
        default: Issue.record("unexpected error kind: \(error)", sourceLocation: sourceLocation)
        }
        // Nothing more is accepted after a failure (a snapshot's data write alone leaves the store
        // usable: it only touched a temporary file).
        if storage.failureCause != nil {
          let again = storageError { () throws(StorageError) in try storage.sync() }
          guard case .failed = again else {
            Issue.record(
              "after \(error), sync gave \(String(describing: again))", sourceLocation: sourceLocation)
            return outcome
          }
        }
      }
      storage.close()
    } catch {
      Issue.record("opening: \(error)", sourceLocation: sourceLocation)
      return outcome
    }
    let context =
      "seed \(seed), failure \(outcome.error.map { "\($0)" } ?? "none") in \(outcome.failedStep ?? "-")"
    let (reopened, recovered) = try reopen(directory.data, options: options)
    for problem in workload.violations(in: recovered) {
      Issue.record("\(context): \(problem)", sourceLocation: sourceLocation)
    }
    // The reopened store carries on normally.
    try reopened.write(
      PersistBatch(entries: [
        Verifiable.entry(
          recovered.stored.snapshot.index + UInt64(recovered.stored.entries.count) + 1,
          term: max(
            recovered.stored.hardState.term, recovered.stored.entries.last?.term ?? 0,
            recovered.stored.snapshot.term, 1))
      ]))
    try reopened.sync()
    reopened.close()
    let (final, again) = try reopen(directory.data, options: options)
    final.close()
    #expect(again.warnings.isEmpty, "\(context): \(again.warnings)", sourceLocation: sourceLocation)
    return outcome
  }

  static let sweepOptions = [
    FileStorageOptions(segmentSizeBytes: 4096, preallocateSegments: true),
    FileStorageOptions(segmentSizeBytes: 4096, preallocateSegments: false),
  ]

  /// Fails the Nth call of one kind, for every N the workload reaches.
  @Test(arguments: [
    FaultInjectingFileSystem.Operation.write, .sync, .truncate, .remove, .create, .rename, .allocate,
  ])
  func everyFailurePoint(operation: FaultInjectingFileSystem.Operation) throws {
    var failures = 0
    for options in Self.sweepOptions {
      for n in 1...400 {
        let outcome = try Self.runToFailure(seed: UInt64(n % 7 + 1), steps: 60, options: options) {
          $0.fail(operation, onCall: n, errno: EIO)
        }
        guard outcome.error != nil else { break }
        failures += 1
      }
    }
    if operation == .allocate {
      #expect(failures == 0, "preallocation is best effort; its failure must not fail the store")
    } else {
      #expect(failures >= 2, "the workload never reached a \(operation) call")
    }
  }

  @Test func aWriteFailureSurfacesAndStopsTheStore() throws {
    let outcome = try Self.runToFailure(seed: 3, steps: 200, options: smallSegments) {
      $0.fail(.write, onCall: 25, errno: EIO, pathContains: "/wal/")
    }
    guard case .io(_, let path, let code) = outcome.error else {
      Issue.record("expected an I/O error, got \(String(describing: outcome.error))")
      return
    }
    #expect(path.contains("/wal/") && code == EIO)
  }

  @Test func anFsyncFailureSurfacesAndStopsTheStore() throws {
    let outcome = try Self.runToFailure(seed: 4, steps: 200, options: smallSegments) {
      $0.fail(.sync, onCall: 10, errno: EIO, pathContains: "/wal/0")
    }
    guard case .io(let operation, _, EIO) = outcome.error else {
      Issue.record("expected an fsync error, got \(String(describing: outcome.error))")
      return
    }
    #expect(operation.contains("sync"))
  }

  @Test func aStickyBadDiskKeepsFailingButReopens() throws {
    try Self.runToFailure(seed: 5, steps: 200, options: smallSegments) {
      $0.fail(.sync, onCall: 12, errno: EIO, sticky: true)
    }
  }

  /// A slow sync reports itself just before and just after its sleep (SlowFsyncTests logs these as
  /// markers); syncs without a delay report nothing.
  @Test func aDelayedSyncReportsItsStartAndEnd() throws {
    let directory = TemporaryDirectory()
    let fs = FaultInjectingFileSystem()
    let events = Mutex<[(path: String, began: Bool, at: ContinuousClock.Instant)]>([])
    fs.onDelayedSync = { path, began in events.withLock { $0.append((path, began, .now)) } }
    let path = directory.path + "/file"
    let file = try fs.open(path, mode: .createOrTruncate)
    defer { file.close() }
    try file.sync()
    #expect(events.withLock { $0.isEmpty })
    fs.syncDelay = .milliseconds(30)
    try file.sync()
    let seen = events.withLock { $0 }
    #expect(seen.map(\.path) == [path, path])
    #expect(seen.map(\.began) == [true, false])
    if seen.count == 2 { #expect(seen[1].at - seen[0].at >= .milliseconds(30)) }
  }

  @Test(arguments: [1, 7, 64])
  func shortWritesAreCompleted(limit: Int) throws {
    let outcome = try Self.runToFailure(seed: 9, steps: 150, options: smallSegments) {
      $0.maxBytesPerWrite = limit
    }
    #expect(outcome.error == nil)
  }

  @Test(arguments: [true, false])
  func aFullDiskSurfacesAsNoSpace(preallocate: Bool) throws {
    var sawNoSpace = 0
    for budget in stride(from: Int64(0), through: 40_000, by: 1_999) {
      let options = FileStorageOptions(segmentSizeBytes: 4096, preallocateSegments: preallocate)
      let outcome = try Self.runToFailure(seed: UInt64(budget % 5 + 1), steps: 120, options: options) {
        $0.spaceRemaining = budget
      }
      switch outcome.error {
      case .noSpace: sawNoSpace += 1
      case nil: break
      case let other?: Issue.record("budget \(budget): expected noSpace, got \(other)")
      }
    }
    #expect(sawNoSpace >= 5)
  }

  /// ENOSPC part way through a batch: the partial batch is cut off again, so the reopened log ends
  /// exactly at the last complete batch and needs no repair.
  @Test func aPartialBatchIsRolledBack() throws {
    let directory = TemporaryDirectory()
    let fs = FaultInjectingFileSystem()
    var options = smallSegments
    options.preallocateSegments = false
    let storage = try FileStorage(
      directory: directory.data, options: options, fileSystem: fs, logger: quietLogger)
    _ = try storage.recover()
    try storage.write(PersistBatch(entries: Entries.run(1...10, term: 1, size: 50)))
    try storage.sync()
    let segment = storage.walSegments.last!
    let goodEnd = segment.end
    fs.spaceRemaining = 100
    let error = storageError { () throws(StorageError) in
      try storage.write(PersistBatch(entries: Entries.run(11...20, term: 1, size: 50)))
    }
    guard case .noSpace = error else {
      Issue.record("expected noSpace, got \(String(describing: error))")
      return
    }
    #expect(Int64(Disk.size(segment.path)) == goodEnd)
    guard
      case .failed = storageError({ () throws(StorageError) in
        try storage.write(PersistBatch(entries: Entries.run(11...11, term: 1)))
      })
    else {
      Issue.record("the store must refuse writes after a failure")
      return
    }
    storage.close()
    let (reopened, recovered) = try reopen(directory.data, options: options)
    defer { reopened.close() }
    expectLog(recovered.stored.entries, Entries.run(1...10, term: 1, size: 50))
    #expect(recovered.warnings.isEmpty)
  }

  @Test func aFailedSnapshotCommitLeavesThePreviousSnapshot() throws {
    let directory = TemporaryDirectory()
    let fs = FaultInjectingFileSystem()
    let storage = try FileStorage(directory: directory.data, fileSystem: fs, logger: quietLogger)
    _ = try storage.recover()
    try storage.write(PersistBatch(entries: Entries.run(1...20, term: 1)))
    try storage.sync()
    let first = snapshotMetadata(10, term: 1)
    let sink = try storage.snapshots.beginWrite(first)
    try sink.commit()
    fs.fail(.sync, onCall: 1, errno: EIO, pathContains: "/snapshots/")
    let second = try storage.snapshots.beginWrite(snapshotMetadata(20, term: 1))
    try second.write([1, 2, 3])
    guard case .io = storageError({ () throws(StorageError) in try second.commit() }) else {
      Issue.record("the failed fsync must surface")
      return
    }
    second.abort()
    #expect(storage.failureCause != nil)
    storage.close()
    let (reopened, recovered) = try reopen(directory.data)
    defer { reopened.close() }
    #expect(recovered.snapshot == first)
    #expect(
      Disk.list(directory.file("snapshots")) == ["\(DataLayout.padded(10))-\(DataLayout.padded(1)).snap"])
  }
}
