import Foundation
import NIOConcurrencyHelpers
import Raft
import RaftStorage

/// One `Ready`'s persistence.
struct PersistJob: Sendable {
  var batch: PersistBatch
  var mustSync: Bool
  /// A snapshot received from the leader, to commit before the batch that installs it.
  var snapshotToCommit: LockedSnapshotSink?
  var completion: @Sendable (Result<Void, StorageError>) -> Void
}

/// Owns the node's storage and runs all its writes on one dedicated thread, so blocking file I/O
/// never touches an event loop. Group commit: every job queued while an fsync is in progress is
/// written and covered by the next single fsync, and jobs complete strictly in submission order
/// (which is what lets `Ready.messagesAfterPersist` leave in order).
final class StorageWriter: @unchecked Sendable {
  // Unchecked: `jobs` and `stopped` are guarded by `condition`; the storage object is only used
  // while holding `storageLock` (by the writer thread, and briefly by snapshot and transport code
  // through `withStorage`).
  private let storage: any RaftStorage
  private let storageLock = NIOLock()
  private let condition = NSCondition()
  private var jobs: [PersistJob] = []
  private var stopped = false
  private var failure: StorageError?
  private var thread: Thread?
  /// Observes each fsync: (jobs covered, seconds taken).
  let onSync: @Sendable (Int, Double) -> Void

  init(storage: any RaftStorage, onSync: @escaping @Sendable (Int, Double) -> Void = { _, _ in }) {
    self.storage = storage
    self.onSync = onSync
  }

  func start() {
    let thread = Thread { [self] in run() }
    thread.name = "raftdb-storage-writer"
    thread.qualityOfService = .userInitiated
    self.thread = thread
    thread.start()
  }

  func submit(_ job: PersistJob) {
    condition.lock()
    if stopped {
      condition.unlock()
      job.completion(.failure(.failed(cause: "node is shutting down")))
      return
    }
    jobs.append(job)
    condition.signal()
    condition.unlock()
  }

  /// The snapshot store, for what the node loop does with it: open a snapshot to send, begin
  /// receiving one, abort one. Those touch only their own files (`FileSnapshotStore`'s threading
  /// note), so they do not take `storageLock`, which `persist` holds across the fsync: nothing on an
  /// event loop waits for the disk.
  var snapshotStore: any SnapshotStore { storage.snapshots }

  /// Runs `body` with exclusive use of the storage (committing snapshots, compaction, recovery).
  func withStorage<T>(_ body: (any RaftStorage) throws -> T) rethrows -> T {
    try storageLock.withLock { try body(storage) }
  }

  func withStorageTyped<T>(_ body: (any RaftStorage) throws(StorageError) -> T) throws(StorageError) -> T {
    storageLock.lock()
    defer { storageLock.unlock() }
    return try body(storage)
  }

  /// Finishes queued jobs, then stops the thread.
  func stop() {
    condition.lock()
    stopped = true
    condition.signal()
    condition.unlock()
  }

  private func run() {
    while true {
      condition.lock()
      while jobs.isEmpty && !stopped { condition.wait() }
      if jobs.isEmpty && stopped {
        condition.unlock()
        return
      }
      let batch = jobs
      jobs.removeAll(keepingCapacity: true)
      condition.unlock()
      let result = persist(batch)
      for job in batch { job.completion(result) }
    }
  }

  private func persist(_ batch: [PersistJob]) -> Result<Void, StorageError> {
    if let failure { return .failure(.failed(cause: "\(failure)")) }
    storageLock.lock()
    defer { storageLock.unlock() }
    do throws(StorageError) {
      var needsSync = false
      for job in batch {
        if let sink = job.snapshotToCommit { try sink.commitUnlocked() }
        if !job.batch.isEmpty { try storage.write(job.batch) }
        needsSync = needsSync || job.mustSync
      }
      if needsSync {
        let start = ContinuousClock.now
        try storage.sync()
        let elapsed = ContinuousClock.now - start
        onSync(
          batch.count, Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds))
      }
      return .success(())
    } catch {
      // After a failed write or fsync the state of unsynced data is unknown: stop writing for good.
      failure = error
      return .failure(error)
    }
  }
}

/// A received snapshot's sink: its commit takes the storage lock (it changes which snapshots exist);
/// its chunk writes and abort touch only its own temporary file and run without it.
final class LockedSnapshotSink: @unchecked Sendable {
  // Unchecked: the sink is written by one thread at a time (a connection handler or the snapshot
  // task), then committed or aborted exactly once under the storage lock.
  let sink: any SnapshotSink
  let metadata: SnapshotMetadata
  private let writer: StorageWriter

  init(sink: any SnapshotSink, metadata: SnapshotMetadata, writer: StorageWriter) {
    self.sink = sink
    self.metadata = metadata
    self.writer = writer
  }

  func write(_ chunk: [UInt8]) throws(StorageError) { try sink.write(chunk) }

  func commit() throws(StorageError) {
    try writer.withStorageTyped { _ throws(StorageError) in try sink.commit() }
  }

  /// Commit when the caller already holds the storage lock (the writer thread).
  func commitUnlocked() throws(StorageError) { try sink.commit() }

  /// Throws the received data away: only this sink's temporary file, so no storage lock (see
  /// `StorageWriter.snapshotStore`).
  func abort() { sink.abort() }
}
