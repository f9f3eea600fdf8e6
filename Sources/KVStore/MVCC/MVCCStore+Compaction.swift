extension MVCCStore {
  // MARK: - Compaction

  /// Drops the history below `revision`: afterwards a key keeps only its changes after `revision`
  /// and, if it existed at `revision`, the change that it had then; a key deleted at or before
  /// `revision` is gone. O(keys with history).
  public mutating func compact(_ revision: Int64) throws(MVCCError) {
    guard revision > compactRevision else { throw .compacted(compactRevision: compactRevision) }
    guard revision <= self.revision else { throw .futureRevision }
    var compacted = SortedMap<Change>()
    index.forEach(from: [], below: nil) { key, newest in
      if let kept = Self.compact(newest, at: revision) { compacted.insert(kept, forKey: key) }
      return true
    }
    index = compacted
    var remaining = SortedMap<[UInt8]>()
    changesByRevision.forEach(from: Revision(main: revision + 1).indexKey, below: nil) { at, key in
      remaining.insert(key, forKey: at)
      return true
    }
    changesByRevision = remaining
    compactRevision = revision
    heldBytes = Self.heldBytes(in: index)
  }

  /// The changes of one key that survive a compaction at `revision`, or nil if none do.
  private static func compact(_ newest: Change, at revision: Int64) -> Change? {
    var newer: [Change] = []
    var change: Change? = newest
    while let current = change, current.revision.main > revision {
      newer.append(current)
      change = current.older
    }
    // `change` is now the key's state at `revision`: kept only if it is a value.
    var kept: Change? = nil
    if let atRevision = change, atRevision.value != nil {
      kept =
        atRevision.older == nil
        ? atRevision
        : Change(
          revision: atRevision.revision, value: atRevision.value, createRevision: atRevision.createRevision,
          version: atRevision.version, lease: atRevision.lease, older: nil)
    }
    if newer.isEmpty { return kept }
    if newer.last!.older === kept { return newest }  // Nothing below was dropped.
    for current in newer.reversed() {
      kept = Change(
        revision: current.revision, value: current.value, createRevision: current.createRevision,
        version: current.version, lease: current.lease, older: kept)
    }
    return kept
  }

  /// Bytes of keys and values the index holds, counted afresh.
  static func heldBytes(in index: SortedMap<Change>) -> Int {
    var total = 0
    index.forEach(from: [], below: nil) { key, newest in
      total += key.count
      var change: Change? = newest
      while let current = change {
        total += current.value?.count ?? 0
        change = current.older
      }
      return true
    }
    return total
  }
}
