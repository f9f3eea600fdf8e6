@_spi(Testing) import Raft
import RaftGroup

/// What the simulated application keeps in its state machine: enough to tell whether two nodes
/// applied the same commands in the same order (a hash chain), and how far.
struct MachineState: Hashable, Sendable {
  var appliedIndex: UInt64 = 0
  var digest: UInt64 = 0
  var appliedCommands: UInt64 = 0

  mutating func apply(_ entry: LogEntry) {
    precondition(entry.index == appliedIndex + 1, "applying \(entry.index) after \(appliedIndex)")
    appliedIndex = entry.index
    digest = Fingerprint.combine(digest, Fingerprint.of(entry))
    if entry.kind == .command { appliedCommands += 1 }
  }
}

/// One durable write of a `Ready`, pending until its simulated fsync completes.
struct PendingWrite {
  var hardState: HardState?
  var snapshot: (metadata: SnapshotMetadata, machine: MachineState)?
  var entries: [LogEntry]
  /// The group's completion, called once the write is durable (never, if the node crashes first).
  var completion: (Result<Void, GroupStorageFailure>) -> Void
}

/// A node's stable storage, modelled after the WAL + hard state + snapshot files of RaftStorage:
/// log records form an append-only stream (a crash keeps a prefix of what was written but not
/// synced), the hard state is a separate record written atomically, and a snapshot is installed by an
/// atomic rename.
struct SimulatedDisk {
  var hardState = HardState.initial
  var snapshot = SnapshotMetadata.empty
  var snapshotMachine = MachineState()
  /// Contiguous; the first entry may lie at or below `snapshot.index + 1`.
  var entries: [LogEntry] = []

  var storedState: StoredState {
    StoredState(hardState: hardState, snapshot: snapshot, entries: entries)
  }

  /// Applies a write, or — after a crash — the part of it that reached the disk: the snapshot install and
  /// the truncation of a conflicting suffix always (RaftStorage makes both durable before writing
  /// anything after them), then the first `entryLimit` appended entries, and the separately written
  /// hard state only if `includeHardState`.
  mutating func apply(_ write: PendingWrite, entryLimit: Int? = nil, includeHardState: Bool = true) {
    if let (metadata, machine) = write.snapshot {
      snapshot = metadata
      snapshotMachine = machine
      entries = []
    }
    if let first = write.entries.first {
      if let k = entries.firstIndex(where: { $0.index >= first.index }) {
        entries.removeSubrange(k...)
      }
      precondition(
        entries.last.map { $0.index + 1 == first.index } ?? (first.index <= snapshot.index + 1),
        "disk log would have a gap before \(first.index)")
      entries.append(contentsOf: entryLimit.map { write.entries.prefix($0) } ?? write.entries[...])
    }
    if includeHardState, let hardState = write.hardState { self.hardState = hardState }
  }

  /// Stores a snapshot the node took itself and drops the log below it, less `retain` entries.
  mutating func storeLocalSnapshot(_ metadata: SnapshotMetadata, machine: MachineState, retain: UInt64) {
    snapshot = metadata
    snapshotMachine = machine
    let keepFrom = metadata.index > retain ? metadata.index - retain + 1 : 0
    entries.removeAll { $0.index < keepFrom }
  }
}

/// Stable 64-bit fingerprints (FNV-1a): hashing must not depend on per-process seeds, or a seed
/// would not reproduce.
enum Fingerprint {
  static func of(_ entry: LogEntry) -> UInt64 {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    func mix(_ byte: UInt8) {
      hash ^= UInt64(byte)
      hash &*= 0x0000_0100_0000_01B3
    }
    for shift in stride(from: 0, to: 64, by: 8) {
      mix(UInt8(truncatingIfNeeded: entry.term >> UInt64(shift)))
    }
    for shift in stride(from: 0, to: 64, by: 8) {
      mix(UInt8(truncatingIfNeeded: entry.index >> UInt64(shift)))
    }
    mix(entry.kind.rawValue)
    for byte in entry.data { mix(byte) }
    return hash
  }

  static func combine(_ a: UInt64, _ b: UInt64) -> UInt64 {
    var x = a ^ (b &+ 0x9E37_79B9_7F4A_7C15 &+ (a << 6) &+ (a >> 2))
    x = (x ^ (x >> 31)) &* 0x7FB5_D329_728E_A185
    return x ^ (x >> 27)
  }
}
