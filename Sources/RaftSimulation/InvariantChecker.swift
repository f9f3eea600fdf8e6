@_spi(Testing) import Raft

/// The safety properties of Raft (paper Figure 3) plus linearizable reads, checked against what the
/// simulated nodes do, after every event. It sees nodes only through their public API and their
/// `Ready` output, as an application would.
struct InvariantChecker {
  private struct EntryKey: Hashable {
    var index: UInt64
    var term: UInt64
  }

  private struct EntryFacts: Equatable {
    var fingerprint: UInt64
    var previousTerm: UInt64?
  }

  /// Election safety: the one leader seen in each term.
  private var leaderOfTerm: [UInt64: NodeID] = [:]
  /// Term of the committed entry at each index (slot i - 1; 0 = not yet seen).
  private var committedTerms: [UInt64] = []
  /// The earliest term in which any node knew each index to be committed. Leader completeness
  /// promises an entry only to leaders of later terms: a candidate that collects late votes for an
  /// older term may legitimately lead that term without entries committed since (nobody at the
  /// newer term will accept its appends).
  private var commitTerms: [UInt64] = []
  private(set) var maxCommitted: UInt64 = 0
  /// Fingerprint of the entry applied at each index, and the state machine digest after it.
  private var appliedFingerprints: [UInt64] = []
  private var appliedDigests: [UInt64] = []
  /// Log matching: what every (index, term) pair seen in any log contains, and its predecessor's term.
  private var entryRegistry: [EntryKey: EntryFacts] = [:]

  func committedTerm(at index: UInt64) -> UInt64? {
    guard index >= 1, index <= UInt64(committedTerms.count) else { return nil }
    let term = committedTerms[Int(index - 1)]
    return term == 0 ? nil : term
  }

  /// Election safety: at most one leader per term.
  mutating func leaderElected(_ node: RaftNode, at time: UInt64) throws(Violation) {
    let term = node.currentTerm
    if let other = leaderOfTerm[term], other != node.id {
      throw Violation(
        kind: .electionSafety, detail: "\(other) and \(node.id) both lead term \(term)", time: time)
    }
    leaderOfTerm[term] = node.id
    try checkLeaderCompleteness(node, at: time)
  }

  /// Leader completeness: a new leader's log holds every entry committed so far.
  private func checkLeaderCompleteness(_ node: RaftNode, at time: UInt64) throws(Violation) {
    let snapshotIndex = node.snapshotMetadata.index
    guard maxCommitted > snapshotIndex else { return }
    for index in (snapshotIndex + 1)...maxCommitted {
      guard let committed = committedTerm(at: index), commitTerms[Int(index - 1)] < node.currentTerm else {
        continue
      }
      let held = node.term(at: index)
      if held != committed {
        throw Violation(
          kind: .leaderCompleteness,
          detail:
            "\(node.id) leads term \(node.currentTerm) but holds \(held.map { "term \($0)" } ?? "nothing") "
            + "at index \(index), where an entry of term \(committed) was committed in term \(commitTerms[Int(index - 1)])",
          time: time)
      }
    }
  }

  /// Records the node's committed prefix from `fromIndex` and checks it never disagrees with what
  /// any node committed before.
  mutating func commitObserved(_ node: RaftNode, from fromIndex: UInt64, at time: UInt64) throws(Violation) {
    let commit = node.commitIndex
    guard commit >= fromIndex else { return }
    for index in fromIndex...commit {
      guard let term = node.term(at: index) else { continue }
      if committedTerms.count < Int(index) {
        committedTerms.append(contentsOf: repeatElement(0, count: Int(index) - committedTerms.count))
        commitTerms.append(contentsOf: repeatElement(.max, count: Int(index) - commitTerms.count))
      }
      let slot = Int(index - 1)
      commitTerms[slot] = min(commitTerms[slot], node.currentTerm)
      if committedTerms[slot] == 0 {
        committedTerms[slot] = term
      } else if committedTerms[slot] != term {
        throw Violation(
          kind: .committedEntryChanged,
          detail:
            "\(node.id) committed index \(index) in term \(term), earlier committed in term \(committedTerms[slot])",
          time: time)
      }
    }
    maxCommitted = max(maxCommitted, commit)
  }

  /// Log matching: entries with the same index and term hold the same command and follow entries
  /// of the same term, so (by induction) the logs are identical up to there.
  mutating func entriesAppended(
    _ entries: [LogEntry], previousTerm firstPreviousTerm: UInt64?, by node: NodeID, at time: UInt64
  ) throws(Violation) {
    var previousTerm = firstPreviousTerm
    for entry in entries {
      let facts = EntryFacts(fingerprint: Fingerprint.of(entry), previousTerm: previousTerm)
      let key = EntryKey(index: entry.index, term: entry.term)
      if let known = entryRegistry[key] {
        let samePrevious =
          known.previousTerm == nil || facts.previousTerm == nil
          || known.previousTerm == facts.previousTerm
        if known.fingerprint != facts.fingerprint || !samePrevious {
          throw Violation(
            kind: .logMatching,
            detail: "\(node) holds a different entry \(entry.position) (or predecessor) than another node",
            time: time)
        }
        if known.previousTerm == nil && facts.previousTerm != nil { entryRegistry[key] = facts }
      } else {
        entryRegistry[key] = facts
      }
      previousTerm = entry.term
    }
  }

  /// State machine safety: no two nodes apply different entries at the same index.
  mutating func entryApplied(_ entry: LogEntry, digestAfter: UInt64, by node: NodeID, at time: UInt64)
    throws(Violation)
  {
    let slot = Int(entry.index - 1)
    if appliedFingerprints.count <= slot {
      appliedFingerprints.append(contentsOf: repeatElement(0, count: slot + 1 - appliedFingerprints.count))
      appliedDigests.append(contentsOf: repeatElement(0, count: slot + 1 - appliedDigests.count))
    }
    let fingerprint = Fingerprint.of(entry)
    if appliedFingerprints[slot] == 0 {
      appliedFingerprints[slot] = fingerprint
      appliedDigests[slot] = digestAfter
    } else if appliedFingerprints[slot] != fingerprint || appliedDigests[slot] != digestAfter {
      throw Violation(
        kind: .stateMachineSafety,
        detail:
          "\(node) applied \(entry.position) but another node applied a different entry or history there",
        time: time)
    }
  }

  /// A snapshot (received or read back after a restart) must equal what nodes applied.
  func machineRestored(_ machine: MachineState, by node: NodeID, at time: UInt64) throws(Violation) {
    guard machine.appliedIndex > 0 else { return }
    let slot = Int(machine.appliedIndex - 1)
    guard slot < appliedDigests.count, appliedFingerprints[slot] != 0 else {
      throw Violation(
        kind: .stateMachineSafety,
        detail: "\(node) restored state at \(machine.appliedIndex) that no node ever applied", time: time)
    }
    if appliedDigests[slot] != machine.digest {
      throw Violation(
        kind: .stateMachineSafety,
        detail: "\(node) restored state at \(machine.appliedIndex) that differs from what nodes applied",
        time: time)
    }
  }

  /// Linearizable reads: a read must observe every write committed before it began.
  func readAnswered(index: UInt64, requiredIndex: UInt64, by node: NodeID, requestID: UInt64, at time: UInt64)
    throws(Violation)
  {
    guard index >= requiredIndex else {
      throw Violation(
        kind: .staleRead,
        detail:
          "\(node) answered read #\(requestID) at index \(index), but \(requiredIndex) was committed before it began",
        time: time)
    }
  }
}
