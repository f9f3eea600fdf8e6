/// The configurations recorded in the log above the last snapshot, so that the node can answer
/// "which configuration was in force at index i" (for snapshot metadata) and roll back to the right
/// one when a conflicting suffix is truncated. At most a handful of entries: changes are rare and
/// only one may be uncommitted at a time.
struct ConfigurationHistory {
  private(set) var base: Configuration
  private(set) var baseIndex: UInt64
  private var changes: [(index: UInt64, configuration: Configuration)] = []

  init(base: Configuration, baseIndex: UInt64) {
    self.base = base
    self.baseIndex = baseIndex
  }

  var latest: Configuration { changes.last?.configuration ?? base }

  /// Index of the entry that set `latest` (or the snapshot index if no entry did).
  var latestIndex: UInt64 { changes.last?.index ?? baseIndex }

  func configuration(at index: UInt64) -> Configuration {
    precondition(index >= baseIndex, "configuration at \(index) is below the snapshot at \(baseIndex)")
    return changes.last { $0.index <= index }?.configuration ?? base
  }

  mutating func record(_ configuration: Configuration, at index: UInt64) {
    precondition(index > latestIndex, "configuration entries must be recorded in log order")
    changes.append((index, configuration))
  }

  /// Forgets configurations set by entries at or above `index` (they were truncated).
  /// Returns whether the latest configuration changed.
  mutating func truncate(from index: UInt64) -> Bool {
    let before = changes.count
    changes.removeAll { $0.index >= index }
    return changes.count != before
  }

  mutating func compact(through index: UInt64) {
    guard index > baseIndex else { return }
    base = configuration(at: index)
    baseIndex = index
    changes.removeAll { $0.index <= index }
  }
}
