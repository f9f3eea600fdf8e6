import Logging
import Raft
@_spi(Testing) import RaftStorage
import Testing

/// The two implementations, for tests that must hold for both.
enum StorageKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
  case file
  case memory

  var testDescription: String { rawValue }
}

/// A storage under test and how to restart it: a `FileStorage` is closed and its directory reopened;
/// a `MemoryStorage` keeps only what it holds durable (`crashed()`).
final class Harness {
  let kind: StorageKind
  let options: FileStorageOptions
  let directory = TemporaryDirectory()
  private(set) var storage: any RaftStorage
  private(set) var recovered: RecoveredState

  init(_ kind: StorageKind, options: FileStorageOptions = FileStorageOptions()) throws {
    self.kind = kind
    self.options = options
    switch kind {
    case .file: storage = try FileStorage(directory: directory.data, options: options, logger: quietLogger)
    case .memory: storage = MemoryStorage(options: options)
    }
    recovered = try storage.recover()
  }

  @discardableResult
  func restart() throws -> RecoveredState {
    switch kind {
    case .file:
      (storage as! FileStorage).close()
      storage = try FileStorage(directory: directory.data, options: options, logger: quietLogger)
    case .memory:
      storage = (storage as! MemoryStorage).crashed()
    }
    recovered = try storage.recover()
    return recovered
  }

  var file: FileStorage { storage as! FileStorage }

  func append(_ entries: [LogEntry], hardState: HardState? = nil) throws {
    try storage.write(PersistBatch(entries: entries, hardState: hardState))
  }

  /// Appends in batches of `batch` entries, so that small segments roll over between batches.
  func append(_ entries: [LogEntry], inBatchesOf batch: Int) throws {
    for start in stride(from: 0, to: entries.count, by: batch) {
      try append(Array(entries[start..<min(entries.count, start + batch)]))
    }
  }

  /// Writes and commits a snapshot through the store.
  func saveSnapshot(_ metadata: SnapshotMetadata, data: [UInt8] = Array(repeating: 7, count: 100)) throws {
    let sink = try storage.snapshots.beginWrite(metadata)
    try sink.write(data)
    try sink.commit()
  }
}

/// Recovery warnings are asserted on through `RecoveredState.warnings`; keep test output readable.
let quietLogger: Logger = {
  var logger = Logger(label: "raftdb.storage.test")
  logger.logLevel = .critical
  return logger
}()

/// Opens and recovers a data directory the way a restarting node does.
func reopen(
  _ path: String, options: FileStorageOptions = FileStorageOptions(),
  fileSystem: any StorageFileSystem = POSIXFileSystem()
) throws(StorageError) -> (FileStorage, RecoveredState) {
  let storage = try FileStorage(
    directory: path, options: options, fileSystem: fileSystem, logger: quietLogger)
  do {
    return (storage, try storage.recover())
  } catch {
    storage.close()
    throw error
  }
}

/// Compares logs by position and content, reporting only where they differ (entries are long).
func expectLog(
  _ actual: [LogEntry], _ expected: [LogEntry], _ context: @autoclosure () -> String = "",
  sourceLocation: SourceLocation = #_sourceLocation
) {
  guard actual != expected else { return }
  let firstDifference =
    (0..<min(actual.count, expected.count)).first { actual[$0] != expected[$0] }
    ?? min(actual.count, expected.count)
  let describe = { (entries: [LogEntry]) -> String in
    guard let first = entries.first, let last = entries.last else { return "empty" }
    return "\(entries.count) entries \(first.position)...\(last.position)"
  }
  Issue.record(
    "log differs at position \(firstDifference): got \(describe(actual)), expected \(describe(expected)) \(context())",
    sourceLocation: sourceLocation)
}
