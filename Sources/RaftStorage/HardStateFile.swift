import Raft

/// The hard state (term, vote, commit) in two fixed-size checksummed slots, written alternately.
///
/// Overwriting a single record in place could be torn by a crash, leaving neither the old nor the new
/// term and vote: the node could then vote twice in one term. With two slots, a write only ever goes to
/// the slot that does *not* hold the newest durable value, so a crash at any instant leaves that value
/// intact, and recovery takes the valid slot with the highest sequence number: the old state or the
/// new one, never a mix. Slots sit 512 bytes apart so that one torn sector cannot damage both.
///
/// Slot layout (big-endian): magic "RDBH" (4), version (2), reserved (2), sequence (8), term (8),
/// vote (8, 0 = none), commit (8), CRC32C of the preceding 40 bytes (4).
@_spi(Testing) public final class HardStateFile {
  static let magic: UInt32 = 0x5244_4248
  static let version: UInt16 = 1
  public static let slotLength = 44
  static let slotStride: Int64 = 512

  private let file: any StorageFile
  /// The slot holding the newest value known to be durable; writes go to the other one.
  private var durableSlot: Int
  private var durableState: HardState
  private var sequence: UInt64
  private var writtenSlot: Int?
  /// Set when a write changed term or vote: those must be fsynced before any promise depends on them.
  private var needsSync = false
  private(set) var current: HardState

  var path: String { file.path }

  private init(file: any StorageFile, slot: Int, sequence: UInt64, state: HardState) {
    self.file = file
    durableSlot = slot
    durableState = state
    self.sequence = sequence
    current = state
  }

  deinit { file.close() }

  /// What an operator should do when the hard state is gone (part of the refusal's message).
  static let recoveryAdvice =
    "Do not start this node with a made-up term and vote: move the data directory aside (keep it for "
    + "diagnosis) and add the node back to the cluster with an empty directory, so that it receives "
    + "the log from the leader; a single-node cluster must be restored from a backup"

  /// Writes the initial state into both slots, durably. Done before FORMAT is written, so that an
  /// initialized directory always has a valid slot and a torn first write cannot leave none.
  static func initialize(path: String, fileSystem fs: any StorageFileSystem) throws(StorageError) {
    let file = try fs.open(path, mode: .createOrTruncate)
    defer { file.close() }
    try file.writeAll(encode(.initial, sequence: 1), at: 0)
    try file.writeAll(encode(.initial, sequence: 0), at: slotStride)
    try file.sync()
  }

  /// Reads the newest valid slot and makes it durable (after a process crash it may still be only in
  /// the page cache, and the next write will overwrite the other slot).
  static func open(
    path: String, fileSystem fs: any StorageFileSystem
  ) throws(StorageError) -> (file: HardStateFile, warning: String?) {
    let file = try fs.open(path, mode: .readWrite)
    let bytes = try file.readAll()
    var warning: String?
    var best: (slot: Int, sequence: UInt64, state: HardState)?
    var problems: [String] = []
    for slot in 0..<2 {
      let start = Int(slotStride) * slot
      switch try decode(bytes, at: start, path: path) {
      case .valid(let sequence, let state):
        if best == nil || sequence > best!.sequence { best = (slot, sequence, state) }
      case .invalid(let reason):
        problems.append("slot \(slot) at offset \(start): \(reason)")
      }
    }
    guard let chosen = best else {
      file.close()
      // An initialized directory always has a valid slot: `initialize` writes and syncs both
      // before FORMAT exists. An empty file (or one with no valid slot) lost the term and vote the
      // node promised; starting from the initial state could let it vote twice in a term.
      let what =
        bytes.isEmpty
        ? "the hard state file is empty"
        : "both hard state slots are invalid (\(problems.joined(separator: "; ")))"
      throw .corruption(
        file: path, offset: 0,
        reason: what + "; the node's term and vote are lost. " + HardStateFile.recoveryAdvice)
    }
    if !problems.isEmpty {
      // One torn slot is the expected trace of a crash during a write (and is overwritten next), but
      // it can also be decay of the newest slot, so it is always reported.
      warning =
        "\(path): \(problems.joined(separator: "; ")); using slot \(chosen.slot) (sequence \(chosen.sequence))"
    }
    try file.dataSync()
    return (
      HardStateFile(file: file, slot: chosen.slot, sequence: chosen.sequence, state: chosen.state), warning
    )
  }

  /// Writes `state` into the slot not holding the durable value. Not synced here: `syncIfNeeded`
  /// syncs it together with the WAL, and only when term or vote changed (commit is only a hint that
  /// a restarted node relearns from the leader).
  func write(_ state: HardState) throws(StorageError) {
    let slot = 1 - durableSlot
    sequence += 1
    try file.writeAll(Self.encode(state, sequence: sequence), at: Int64(slot) * Self.slotStride)
    writtenSlot = slot
    current = state
    if state.term != durableState.term || state.vote != durableState.vote { needsSync = true }
  }

  func syncIfNeeded() throws(StorageError) {
    guard needsSync, let slot = writtenSlot else { return }
    try file.dataSync()
    durableSlot = slot
    durableState = current
    writtenSlot = nil
    needsSync = false
  }

  public static func encode(_ state: HardState, sequence: UInt64) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: slotLength)
    bytes.withUnsafeMutableBytes { slot in
      slot.storeBigEndian(magic, at: 0)
      slot.storeBigEndian(version, at: 4)
      slot.storeBigEndian(UInt16(0), at: 6)
      slot.storeBigEndian(sequence, at: 8)
      slot.storeBigEndian(state.term, at: 16)
      slot.storeBigEndian(state.vote?.rawValue ?? 0, at: 24)
      slot.storeBigEndian(state.commit, at: 32)
      slot.storeBigEndian(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: slot[0..<40])), at: 40)
    }
    return bytes
  }

  enum Slot {
    case valid(sequence: UInt64, state: HardState)
    case invalid(String)
  }

  static func decode(_ bytes: [UInt8], at start: Int, path: String) throws(StorageError) -> Slot {
    guard bytes.count >= start + slotLength else { return .invalid("file too short") }
    let result: Result<Slot, StorageError> = bytes.withUnsafeBytes { all in
      let slot = UnsafeRawBufferPointer(rebasing: all[start..<start + slotLength])
      guard slot.loadBigEndian(at: 0, as: UInt32.self) == magic else {
        return .success(.invalid("bad magic"))
      }
      guard
        CRC32C.checksum(UnsafeRawBufferPointer(rebasing: slot[0..<40]))
          == slot.loadBigEndian(at: 40, as: UInt32.self)
      else { return .success(.invalid("checksum mismatch")) }
      let slotVersion = slot.loadBigEndian(at: 4, as: UInt16.self)
      guard slotVersion == version else {
        return .failure(
          .unsupportedFormat(
            path: path, found: "hard state slot version \(slotVersion)", supported: DataFormat.version))
      }
      let vote = slot.loadBigEndian(at: 24, as: UInt64.self)
      let state = HardState(
        term: slot.loadBigEndian(at: 16, as: UInt64.self), vote: vote == 0 ? nil : NodeID(vote),
        commit: slot.loadBigEndian(at: 32, as: UInt64.self))
      return .success(.valid(sequence: slot.loadBigEndian(at: 8, as: UInt64.self), state: state))
    }
    return try result.get()
  }
}
