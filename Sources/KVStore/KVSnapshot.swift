import Raft

// Snapshot stream: a sequence of frames
//
//   kind: u8, payload length: u32 (big-endian), checksum of payload: u64 (big-endian), payload
//
// in the order: one header frame, the key frames, the lease frames (format 3), idempotency frames,
// one end frame. Each frame carries its own checksum so a corrupt byte is caught where it is, and
// frames are cut at about `chunkBytes` so that neither side ever holds more than a chunk plus one
// record. Frame boundaries need not match the chunks a transport delivers; the decoder reassembles.
//
// The format follows the cluster version, so that every member (an older build among them) reads
// what the others write: format 1 while the cluster runs version 1, 2 under version 2, 3 from
// version 3 on.
//
//   header, formats 1 and 2: magic "RKVS" u32, format version u8, appliedIndex u64, revision u64,
//                 entry count u64, dataBytes u64 (of the entries), idempotency clock u64,
//                 idempotency record count u64, and in format 2 the cluster version u32.
//   header, format 3: magic, format version u8 = 3, appliedIndex u64, revision u64, compacted
//                 revision u64, key count u64, lease count u64, held bytes u64, idempotency clock
//                 u64, idempotency record count u64, cluster version u32.
//   entries (kind 2, formats 1 and 2): per live key, varints: key length, value length,
//                 createRevision, modRevision, version; then key bytes, value bytes. No history:
//                 a store restored from them starts compacted at the snapshot's revision.
//   history (kind 5, format 3): per key in ascending order, varints: key length, key bytes,
//                 change count; per change, newest first: main, sub, flags u8 (1: a value
//                 follows, else a tombstone), [value length, value], createRevision, version,
//                 lease (zigzag).
//   leases (kind 6, format 3): per lease, zigzag varints: id, granted TTL, checkpointed TTL.
//   idempotency:  per record, oldest first: key (u32 length + bytes), proposedAtMillis u64,
//                 recordedAtMillis u64, result (see `writeResult`)
//   end:          empty; its presence proves the stream is complete.

enum SnapshotFormat {
  static let magic: UInt32 = 0x524B_5653  // "RKVS"
  /// Version 2 added the cluster version to the header; 3 the multi-version store's history and
  /// leases.
  static let version: UInt8 = 3
  static let frameHeaderBytes = 13
  static let kindHeader: UInt8 = 1
  static let kindEntries: UInt8 = 2
  static let kindIdempotency: UInt8 = 3
  static let kindEnd: UInt8 = 4
  static let kindHistory: UInt8 = 5
  static let kindLeases: UInt8 = 6
  /// Idempotency keys are bounded by the sender's limits, which ought to match ours; this only stops
  /// a corrupt length from being believed.
  static let maxStringBytes = 1 << 30

  /// The format a cluster at `clusterVersion` writes, and the newest a build supporting it reads:
  /// the one table of them.
  static func version(forClusterVersion clusterVersion: UInt32) -> UInt8 {
    switch clusterVersion {
    case ...ClusterVersion.initial: 1
    case ..<ClusterVersion.multiVersion: 2
    default: 3
    }
  }
}

/// A frozen point-in-time copy of the state machine. Taking it is O(1); it is immutable and
/// `Sendable`, so it can be serialized on another thread while the state machine keeps applying.
public struct KVSnapshot: Sendable {
  public let appliedIndex: UInt64
  /// The cluster version the log had agreed at `appliedIndex`.
  public let clusterVersion: UInt32
  /// The multi-version store as of `appliedIndex`: reads from any thread need nothing else.
  public let store: MVCCStore
  let idempotency: IdempotencyTable

  init(appliedIndex: UInt64, store: MVCCStore, idempotency: IdempotencyTable, clusterVersion: UInt32) {
    self.appliedIndex = appliedIndex
    self.store = store
    self.idempotency = idempotency
    self.clusterVersion = clusterVersion
  }

  public var revision: UInt64 { UInt64(store.revision) }
  public var dataBytes: Int { store.liveBytes }
  /// Bytes of keys and values held, history included: what a snapshot of this carries.
  public var heldBytes: Int { store.heldBytes }
  public var count: Int { store.liveKeyCount }

  /// The record of `key` in this snapshot. Safe from any thread (the snapshot is immutable).
  public func get(_ key: String) -> KVRecord? { store.record(of: key) }

  /// The format this snapshot is written in: the cluster version's.
  var formatVersion: UInt8 { SnapshotFormat.version(forClusterVersion: clusterVersion) }

  /// Serializes in chunks of about `chunkBytes` (more when a single record is larger), calling
  /// `write` for each: streaming, so the whole snapshot is never in memory at once.
  public func serialize(chunkBytes: Int, write: ([UInt8]) throws -> Void) rethrows {
    var chunks = self.chunks(chunkBytes: chunkBytes)
    while let chunk = chunks.next() { try write(chunk) }
  }

  /// The same stream pulled one chunk at a time, for a sender that paces itself (e.g. waits for a
  /// follower's acknowledgement before producing the next chunk).
  public func chunks(chunkBytes: Int) -> Chunks { Chunks(snapshot: self, chunkBytes: chunkBytes) }

  public struct Chunks: Sequence, IteratorProtocol {
    private enum Phase { case header, keys, leases, idempotency, end, done }

    private let snapshot: KVSnapshot
    private let chunkBytes: Int
    private var phase = Phase.header
    /// Where the next key frame starts: just after the last key written.
    private var nextKey: [UInt8] = []
    private var nextLease: Int64 = 0
    private var idempotencyIterator: IdempotencyTable.OrderedIterator

    init(snapshot: KVSnapshot, chunkBytes: Int) {
      self.snapshot = snapshot
      self.chunkBytes = Swift.max(chunkBytes, 64)
      idempotencyIterator = snapshot.idempotency.makeOrderedIterator()
    }

    public mutating func next() -> [UInt8]? {
      guard phase != .done else { return nil }
      var chunk: [UInt8] = []
      // Room for the records that straddle the target, without trusting a huge target.
      chunk.reserveCapacity(Swift.min(chunkBytes, 1 << 26) + 4096)
      while chunk.count < chunkBytes && phase != .done {
        switch phase {
        case .header:
          appendFrame(kind: SnapshotFormat.kindHeader, payload: headerPayload(), to: &chunk)
          phase = .keys
        case .keys:
          if !appendKeysFrame(to: &chunk) { phase = snapshot.formatVersion >= 3 ? .leases : .idempotency }
        case .leases:
          if !appendLeasesFrame(to: &chunk) { phase = .idempotency }
        case .idempotency:
          if !appendIdempotencyFrame(to: &chunk) { phase = .end }
        case .end:
          appendFrame(kind: SnapshotFormat.kindEnd, payload: [], to: &chunk)
          phase = .done
        case .done:
          break
        }
      }
      return chunk
    }

    private func headerPayload() -> [UInt8] {
      var writer = ByteWriter(capacity: 80)
      let version = snapshot.formatVersion
      let store = snapshot.store
      writer.write(SnapshotFormat.magic)
      writer.write(version)
      writer.write(snapshot.appliedIndex)
      writer.write(UInt64(store.revision))
      if version >= 3 {
        writer.write(UInt64(store.compactRevision))
        writer.write(UInt64(store.indexedKeyCount))
        writer.write(UInt64(store.leaseCount))
        writer.write(UInt64(store.heldBytes))
      } else {
        writer.write(UInt64(store.liveKeyCount))
        writer.write(UInt64(store.liveBytes))
      }
      writer.write(snapshot.idempotency.clockMillis)
      writer.write(UInt64(snapshot.idempotency.count))
      if version >= 2 { writer.write(snapshot.clusterVersion) }
      return writer.bytes
    }

    /// Appends one frame of key records, filling the chunk. Returns false once the keys run out.
    private mutating func appendKeysFrame(to chunk: inout [UInt8]) -> Bool {
      let start = chunk.count
      chunk.append(contentsOf: repeatElement(0, count: SnapshotFormat.frameHeaderBytes))
      var more = false
      var last: [UInt8]?
      let limit = chunkBytes
      if snapshot.formatVersion >= 3 {
        snapshot.store.forEachHistory(from: nextKey) { key, changes in
          // At least one record per frame, so that a frame started near the end of a chunk
          // still makes progress.
          guard chunk.count < limit || last == nil else {
            more = true
            return false
          }
          chunk.appendBytes(key)
          chunk.appendVarint(UInt64(changes.count))
          for change in changes {
            chunk.appendVarint(UInt64(change.revision.main))
            chunk.appendVarint(UInt64(change.revision.sub))
            if let value = change.value {
              chunk.append(1)
              chunk.appendBytes(value)
            } else {
              chunk.append(0)
            }
            chunk.appendVarint(UInt64(change.createRevision))
            chunk.appendVarint(UInt64(change.version))
            chunk.appendSigned(change.lease)
          }
          last = key
          return true
        }
      } else {
        snapshot.store.forEachLive(from: nextKey) { key, kv in
          // At least one record per frame, so that a frame started near the end of a chunk
          // still makes progress.
          guard chunk.count < limit || last == nil else {
            more = true
            return false
          }
          chunk.appendVarint(UInt64(key.count))
          chunk.appendVarint(UInt64(kv.value.count))
          chunk.appendVarint(UInt64(kv.createRevision))
          chunk.appendVarint(UInt64(kv.modRevision))
          chunk.appendVarint(UInt64(kv.version))
          chunk.append(contentsOf: key)
          chunk.append(contentsOf: kv.value)
          last = key
          return true
        }
      }
      if let last { nextKey = last + [0] }
      if chunk.count == start + SnapshotFormat.frameHeaderBytes {
        chunk.removeLast(SnapshotFormat.frameHeaderBytes)
      } else {
        let kind = snapshot.formatVersion >= 3 ? SnapshotFormat.kindHistory : SnapshotFormat.kindEntries
        sealFrame(kind: kind, at: start, in: &chunk)
      }
      return more
    }

    /// Appends one frame of leases. Returns false once they run out.
    private mutating func appendLeasesFrame(to chunk: inout [UInt8]) -> Bool {
      let start = chunk.count
      chunk.append(contentsOf: repeatElement(0, count: SnapshotFormat.frameHeaderBytes))
      var more = false
      var last: Int64?
      let limit = chunkBytes
      snapshot.store.forEachLease(from: nextLease) { lease in
        guard chunk.count < limit || last == nil else {
          more = true
          return false
        }
        chunk.appendSigned(lease.id)
        chunk.appendSigned(lease.grantedTTL)
        chunk.appendSigned(lease.checkpointedTTL)
        last = lease.id
        return true
      }
      if let last { nextLease = last + 1 }
      if chunk.count == start + SnapshotFormat.frameHeaderBytes {
        chunk.removeLast(SnapshotFormat.frameHeaderBytes)
      } else {
        sealFrame(kind: SnapshotFormat.kindLeases, at: start, in: &chunk)
      }
      return more
    }

    /// Appends one frame of idempotency records. Returns false once they run out.
    private mutating func appendIdempotencyFrame(to chunk: inout [UInt8]) -> Bool {
      var writer = ByteWriter(capacity: 1024)
      var more = true
      while chunk.count + writer.bytes.count < chunkBytes {
        guard let (key, record) = idempotencyIterator.next() else {
          more = false
          break
        }
        writer.writeLengthPrefixed(Array(key.utf8))
        writer.write(record.proposedAtMillis)
        writer.write(record.recordedAtMillis)
        writeResult(record.result, to: &writer)
      }
      if !writer.bytes.isEmpty {
        appendFrame(kind: SnapshotFormat.kindIdempotency, payload: writer.bytes, to: &chunk)
      }
      return more
    }
  }
}

private func appendFrame(kind: UInt8, payload: [UInt8], to chunk: inout [UInt8]) {
  let start = chunk.count
  chunk.append(contentsOf: repeatElement(0, count: SnapshotFormat.frameHeaderBytes))
  chunk.append(contentsOf: payload)
  sealFrame(kind: kind, at: start, in: &chunk)
}

/// Fills in the header of the frame that starts at `start` and runs to the end of `chunk`.
private func sealFrame(kind: UInt8, at start: Int, in chunk: inout [UInt8]) {
  let payloadStart = start + SnapshotFormat.frameHeaderBytes
  let length = chunk.count - payloadStart
  precondition(length <= Int(UInt32.max), "snapshot frame too large")
  chunk.withUnsafeMutableBytes { bytes in
    let checksum = frameChecksum(UnsafeRawBufferPointer(rebasing: bytes[payloadStart...]), seed: UInt64(kind))
    bytes[start] = kind
    bytes.storeBytes(of: UInt32(length).bigEndian, toByteOffset: start + 1, as: UInt32.self)
    bytes.storeBytes(of: checksum.bigEndian, toByteOffset: start + 5, as: UInt64.self)
  }
}
