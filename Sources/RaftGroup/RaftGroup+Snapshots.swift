import Raft

extension RaftGroup {
  /// Takes a snapshot every `snapshotThresholdEntries` applied entries or `snapshotThresholdBytes`
  /// applied bytes, whichever comes first. The store takes an O(1) frozen copy here and serializes it
  /// elsewhere, so writes keep flowing meanwhile; the core compacts its log once the snapshot is saved.
  func maybeTakeSnapshot() {
    let applied = machine.appliedIndex
    let lastSnapshot = core.snapshotMetadata.index
    guard !snapshotInProgress, !isStopped, applied > lastSnapshot,
      applied >= lastSnapshot + options.snapshotThresholdEntries
        || appliedBytesSinceSnapshot >= options.snapshotThresholdBytes,
      let metadata = core.snapshotMetadata(at: applied)
    else { return }
    snapshotInProgress = true
    appliedBytesSinceSnapshot = 0
    snapshots.save(machine, at: metadata) { [self] result in
      guard !isStopped else { return }
      switch result {
      case .success:
        core.compactLog(through: metadata.index)
        snapshotInProgress = false
        hooks.snapshotSaved?(metadata)
      case .failure:
        // The store logged why; try again later rather than at once.
        executor.execute(afterNanoseconds: options.snapshotRetryNanoseconds) { [self] in
          snapshotInProgress = false
        }
      }
    }
  }

  /// Loads the state machine from an installed snapshot, then swaps it in and continues. Nothing
  /// after the snapshot applies until then: the core hands out entries only once the snapshot is
  /// acknowledged as persisted, which happens in `continuation`.
  func restoreMachine(from snapshot: SnapshotMetadata, then continuation: @escaping () -> Void) {
    snapshots.load(snapshot) { [self] result in
      guard !isStopped else { return }
      switch result {
      case .success(let restored):
        machine = restored
        hooks.machineRestored?(restored, snapshot)
        // Proposals this node was waiting on below the snapshot can no longer be matched to results.
        for (index, proposal) in proposals where index <= snapshot.index {
          proposals[index] = nil
          proposal.fail(.replacedBySnapshot)
        }
        serveReadsAwaitingApply()
        continuation()
      case .failure(let error):
        fail("could not restore snapshot \(snapshot.index): \(error)")
      }
    }
  }
}
