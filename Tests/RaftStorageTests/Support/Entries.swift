import Raft
@_spi(Testing) import RaftStorage

/// Entries whose content is a function of index and term, so any entry read back can be checked
/// on its own.
enum Entries {
  static func data(index: UInt64, term: UInt64, size: Int) -> [UInt8] {
    var state = index &* 0x9E37_79B9_7F4A_7C15 ^ term &* 0xBF58_476D_1CE4_E5B9
    return (0..<size).map { _ in
      state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
      return UInt8(truncatingIfNeeded: state >> 33)
    }
  }

  static func entry(_ index: UInt64, term: UInt64, size: Int = 40) -> LogEntry {
    LogEntry(index: index, term: term, kind: .command, data: data(index: index, term: term, size: size))
  }

  /// Entries `range` in `term`, with sizes varying with the index.
  static func run(_ range: ClosedRange<UInt64>, term: UInt64, size: Int? = nil) -> [LogEntry] {
    range.map { entry($0, term: term, size: size ?? Int($0 % 97) + 1) }
  }

  static func isValidLog(_ entries: [LogEntry]) -> Bool {
    zip(entries, entries.dropFirst()).allSatisfy { $1.index == $0.index + 1 && $1.term >= $0.term }
  }
}

let testConfiguration = Configuration(voters: [NodeID(1), NodeID(2), NodeID(3)])

func snapshotMetadata(_ index: UInt64, term: UInt64) -> SnapshotMetadata {
  SnapshotMetadata(index: index, term: term, configuration: testConfiguration)
}

/// Small segments, so a few dozen entries span several files.
let smallSegments = FileStorageOptions(segmentSizeBytes: 4096)

extension StorageError {
  var isCorruption: Bool {
    if case .corruption = self { return true }
    return false
  }

  var corruptionLocation: (file: String, offset: Int64)? {
    if case .corruption(let file, let offset, _) = self { return (file, offset) }
    return nil
  }
}

/// Runs `body`, returning the `StorageError` it threw (nil if it threw nothing).
func storageError<R>(_ body: () throws(StorageError) -> R) -> StorageError? {
  do {
    _ = try body()
    return nil
  } catch {
    return error
  }
}
