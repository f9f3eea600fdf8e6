extension MVCCStore {
  // MARK: - Compaction

  /// Drops the history below `revision`: afterwards a key keeps only its changes after `revision`
  /// and, if it existed at `revision`, the change that it had then; a key deleted at or before
  /// `revision` is gone.
  ///
  /// O(changes since the last compaction), not O(keys): only a key with a change in
  /// (`compactRevision`, `revision`] can have history to drop. A key whose newest change is at or
  /// below the last compacted revision already holds that one change alone, a value (the last
  /// compaction left it so, and a snapshot's decoder accepts nothing else); a key whose changes
  /// since then all come after `revision` has nothing at or below `revision` but that one value,
  /// which it keeps. `changesByRevision` lists exactly the changes since the last compaction, so
  /// its entries below `revision + 1` name every key to rewrite, and are the entries to remove.
  /// Each such key's history is walked once (its changes since the last compaction, plus at most
  /// one), and `heldBytes` goes down by what was dropped: it stays equal to `heldBytes(in:)`, which
  /// the tests recount after every compaction (`CompactionTests`).
  ///
  /// When those changes are at least half as many as the keys (a first compaction after a bulk
  /// load, say), rewriting key by key costs more than one walk over the whole index, which then
  /// rebuilds it (`kv-store-bench`: 2 s against 5 s for a million keys with two changes each);
  /// that walk is O(keys) = O(changes) there. Likewise the revision index keeps its entries above
  /// `revision` by rebuilding when they are fewer than the ones it drops.
  public mutating func compact(_ revision: Int64) throws(MVCCError) {
    try compact(revision, strategy: .automatic)
  }

  /// How `compact` rewrites the key index; tests force each way and compare them.
  enum CompactionStrategy {
    /// `rebuild` when the changes to compact are at least half as many as the keys, else
    /// `incremental`.
    case automatic
    /// Only the keys with a change in (`compactRevision`, `revision`].
    case incremental
    /// Every key: a new index built in one ordered walk.
    case rebuild
  }

  mutating func compact(_ revision: Int64, strategy: CompactionStrategy) throws(MVCCError) {
    guard revision > compactRevision else { throw .compacted(compactRevision: compactRevision) }
    guard revision <= self.revision else { throw .futureRevision }
    let end = Revision(main: revision + 1).indexKey
    // O(log n): every node counts the keys below it.
    let compactedChanges = changesByRevision.count(from: [], below: end)
    let rebuilding =
      switch strategy {
      case .automatic: compactedChanges * 2 >= index.count
      case .incremental: false
      case .rebuild: true
      }
    var droppedBytes = 0
    if rebuilding {
      var compacted = SortedMap<Change>()
      index.forEach(from: [], below: nil) { key, newest in
        let (kept, dropped) = Self.compact(newest, at: revision)
        droppedBytes += dropped
        if let kept {
          compacted.insert(Self.freshCopy(of: kept), forKey: Self.freshCopy(of: key))
        } else {
          droppedBytes += key.count
        }
        return true
      }
      index = compacted
    } else {
      // The keys of the compacted changes, each once (a key is rewritten once, whatever its
      // number of changes).
      var keys: [[UInt8]] = []
      var seen = Set<[UInt8]>()
      changesByRevision.forEach(from: [], below: end) { _, key in
        if seen.insert(key).inserted { keys.append(key) }
        return true
      }
      for key in keys {
        guard let newest = index[key] else { preconditionFailure("a change since compaction lost its key") }
        let (kept, dropped) = Self.compact(newest, at: revision)
        droppedBytes += dropped
        if let kept {
          if kept !== newest { index.insert(kept, forKey: key) }
        } else {
          index.remove(key)
          droppedBytes += key.count
        }
      }
    }
    let remainingChanges = changesByRevision.count - compactedChanges
    if compactedChanges > remainingChanges {
      var remaining = SortedMap<[UInt8]>()
      changesByRevision.forEach(from: end, below: nil) { at, key in
        remaining.insert(key, forKey: at)
        return true
      }
      changesByRevision = remaining
    } else {
      var compactedAt: [[UInt8]] = []
      compactedAt.reserveCapacity(compactedChanges)
      changesByRevision.forEach(from: [], below: end) { at, _ in
        compactedAt.append(at)
        return true
      }
      for at in compactedAt { changesByRevision.remove(at) }
    }
    compactRevision = revision
    heldBytes -= droppedBytes
  }

  /// A rebuild moves what it keeps into new allocations, made one key after another. Without
  /// that, the kept keys and values stayed where they were allocated, spread over the pages of
  /// the history that was dropped, one or two to a page, so that no page became free: with a
  /// million keys overwritten once and compacted, resident memory stayed at 4.78× the live data
  /// (`bench/memory.sh`, with the trims after a compaction), against 1.99–2.08× with the copies.
  /// Copying a million keys and values costs a fraction of the rebuild itself (a full compaction
  /// of that store took 2.16 s with them, within the 2.15–2.51 s measured without).
  static func freshCopy(of bytes: [UInt8]) -> [UInt8] {
    bytes.withUnsafeBufferPointer { [UInt8]($0) }
  }

  static func freshCopy(of newest: Change) -> Change {
    var chain: [Change] = []
    var change: Change? = newest
    while let current = change {
      chain.append(current)
      change = current.older
    }
    var copy: Change? = nil
    for current in chain.reversed() {
      copy = Change(
        revision: current.revision, value: current.value.map(freshCopy(of:)),
        createRevision: current.createRevision, version: current.version, lease: current.lease, older: copy)
    }
    return copy!
  }

  /// The changes of one key that survive a compaction at `revision` (nil if none do, and then the
  /// caller drops the key), and the bytes of the values dropped (the key's own bytes not counted).
  /// Returns `newest` itself when nothing is dropped.
  private static func compact(_ newest: Change, at revision: Int64) -> (kept: Change?, droppedBytes: Int) {
    var newer: [Change] = []
    var change: Change? = newest
    while let current = change, current.revision.main > revision {
      newer.append(current)
      change = current.older
    }
    // `change` is now the key's state at `revision`: kept only if it is a value, without what
    // came before it.
    var droppedBytes = 0
    var below = change?.older
    while let current = below {
      droppedBytes += current.value?.count ?? 0
      below = current.older
    }
    var kept: Change? = nil
    if let atRevision = change, atRevision.value != nil {
      kept =
        atRevision.older == nil
        ? atRevision
        : Change(
          revision: atRevision.revision, value: atRevision.value, createRevision: atRevision.createRevision,
          version: atRevision.version, lease: atRevision.lease, older: nil)
    }
    // (A tombstone at `revision` holds no value bytes: dropping it frees none.)
    if newer.isEmpty { return (kept, droppedBytes) }
    if newer.last!.older === kept { return (newest, droppedBytes) }  // Nothing below was dropped.
    for current in newer.reversed() {
      kept = Change(
        revision: current.revision, value: current.value, createRevision: current.createRevision,
        version: current.version, lease: current.lease, older: kept)
    }
    return (kept, droppedBytes)
  }

  /// Bytes of keys and values the index holds, counted afresh: O(keys). Compaction keeps
  /// `heldBytes` by difference instead; tests compare the two.
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
