import Raft
import Testing

@testable import KVStore

@Suite struct SnapshotTests {
  /// A state with a bit of everything: updated, deleted and multi-byte keys, empty and large values,
  /// and idempotency records.
  static func populated() -> Driver {
    let driver = Driver()
    for i in 0..<300 { driver.apply(put("key/\(i)", String(repeating: "v", count: i % 40))) }
    for i in stride(from: 0, to: 300, by: 7) { driver.apply(.delete(key: "key/\(i)")) }
    for i in stride(from: 0, to: 300, by: 5) { driver.apply(put("key/\(i)", "again")) }
    driver.apply(
      put(["\u{1F600}": "emoji", "caf\u{E9}": "nfc", "cafe\u{301}": "nfd"]), idempotencyKey: "multi")
    driver.apply(put("large", String(repeating: "L", count: 50_000)), idempotencyKey: "large")
    driver.apply(.compareAndSet(key: "large", expected: "no", value: "x"), idempotencyKey: "cas")
    driver.advance()
    return driver
  }

  @Test(arguments: [1, 64, 100, 4096, 1 << 20])
  func restoreEqualsTheOriginal(chunkBytes: Int) throws {
    let original = Self.populated()
    let chunks = serializedChunks(original.machine.snapshot(), chunkBytes: chunkBytes)
    let restored = KVStateMachine()
    try restore(restored, appliedIndex: original.machine.appliedIndex, from: chunks)
    #expect(restored.canonicalState() == original.machine.canonicalState())
    #expect(restored.count == original.machine.count)
    #expect(restored.dataBytes == original.machine.dataBytes)
    #expect(restored.get("cafe\u{301}")?.value == "nfd")
  }

  /// A transport may split and merge chunks arbitrarily; the decoder reassembles.
  @Test(arguments: [1, 2, 3] as [UInt64])
  func restoreAcceptsAnyRechunking(seed: UInt64) throws {
    let original = Self.populated()
    let stream = serializedChunks(original.machine.snapshot(), chunkBytes: 512).flatMap { $0 }
    var random = SplitMix64(seed: seed)
    var pieces: [[UInt8]] = []
    var offset = 0
    while offset < stream.count {
      let length = Swift.min(stream.count - offset, Int.random(in: 0...2_000, using: &random))
      pieces.append(Array(stream[offset..<offset + length]))
      offset += length
    }
    let restored = KVStateMachine()
    try restore(restored, appliedIndex: original.machine.appliedIndex, from: pieces)
    #expect(restored.canonicalState() == original.machine.canonicalState())
  }

  @Test func emptyStateRoundTrips() throws {
    let empty = KVStateMachine()
    let restored = KVStateMachine()
    try restore(restored, appliedIndex: 0, from: serializedChunks(empty.snapshot()))
    #expect(restored.canonicalState() == empty.canonicalState())
  }

  @Test func chunksAreAboutTheRequestedSize() {
    let original = Self.populated()
    let chunks = serializedChunks(original.machine.snapshot(), chunkBytes: 1_000)
    #expect(chunks.count > 5)
    // A chunk stops growing once it reaches the target, so it exceeds it by at most one record.
    for chunk in chunks { #expect(chunk.count <= 1_000 + 50_100) }
    // The 50 kB value, and the failed CAS's remembered result, which carries it as `current`.
    #expect(chunks.filter { $0.count > 2_000 }.count <= 2)
  }

  @Test func laterAppliesDoNotAffectAFrozenSnapshot() throws {
    let driver = Self.populated()
    let snapshot = driver.machine.snapshot()
    let frozen = snapshot.canonicalState()
    for i in 0..<300 { driver.apply(put("key/\(i)", "changed")) }
    for i in 0..<100 { driver.apply(.delete(key: "key/\(i)")) }
    driver.apply(put("new", "n"), idempotencyKey: "after")
    #expect(snapshot.canonicalState() == frozen)

    let restored = KVStateMachine()
    try restore(restored, appliedIndex: snapshot.appliedIndex, from: serializedChunks(snapshot))
    #expect(restored.canonicalState() == frozen)
    #expect(restored.canonicalState() != driver.machine.canonicalState())
  }

  /// The snapshot is `Sendable`: serialize it on another task while this one keeps applying.
  @Test func serializesConcurrentlyWithApplies() async throws {
    let driver = Self.populated()
    let snapshot = driver.machine.snapshot()
    let frozen = snapshot.canonicalState()
    let serializing = Task.detached { serializedChunks(snapshot, chunkBytes: 256) }
    for round in 0..<20 {
      for i in 0..<300 { driver.apply(put("key/\(i)", "round \(round)")) }
    }
    let restored = KVStateMachine()
    try restore(restored, appliedIndex: snapshot.appliedIndex, from: await serializing.value)
    #expect(restored.canonicalState() == frozen)
  }

  @Test func snapshotCanBeInstalledDirectly() {
    let original = Self.populated()
    let other = Driver()
    other.apply(put("will be replaced", "x"))
    other.machine.restore(original.machine.snapshot())
    #expect(other.machine.canonicalState() == original.machine.canonicalState())
  }

  // MARK: - Failures leave the state unchanged

  struct Corruption: Sendable, CustomTestStringConvertible {
    var name: String
    var mutate: @Sendable ([[UInt8]]) -> [[UInt8]]
    var testDescription: String { name }
  }

  static let corruptions: [Corruption] = [
    Corruption(name: "no bytes at all") { _ in [] },
    Corruption(name: "missing end frame") { Array($0.dropLast()) },
    Corruption(name: "only the first chunk") { Array($0.prefix(1)) },
    Corruption(name: "cut mid-frame") { chunks in
      var chunks = chunks
      chunks[chunks.count / 2].removeLast(3)
      return Array(chunks[...(chunks.count / 2)])
    },
    Corruption(name: "a flipped bit in an entry") { chunks in
      var chunks = chunks
      chunks[2][chunks[2].count / 2] ^= 0x10
      return chunks
    },
    Corruption(name: "a flipped bit in a frame header") { chunks in
      var chunks = chunks
      chunks[1][3] ^= 0x01
      return chunks
    },
    Corruption(name: "a chunk repeated") { chunks in
      var chunks = chunks
      chunks.insert(chunks[2], at: 3)
      return chunks
    },
    Corruption(name: "chunks swapped") { chunks in
      var chunks = chunks
      chunks.swapAt(1, chunks.count - 1)
      return chunks
    },
    Corruption(name: "trailing garbage") { $0 + [[1, 2, 3]] },
    Corruption(name: "a whole frame of trailing data") { $0 + [$0[0]] },
    Corruption(name: "random bytes") { _ in
      var random = SplitMix64(seed: 3)
      return [random.bytes(count: 5_000)]
    },
  ]

  @Test(arguments: corruptions)
  func failedRestoreLeavesTheStateUnchanged(_ corruption: Corruption) {
    let source = Self.populated()
    let chunks = corruption.mutate(serializedChunks(source.machine.snapshot(), chunkBytes: 256))
    let target = Driver()
    target.apply(put("existing", "value"), idempotencyKey: "kept")
    let before = target.machine.canonicalState()
    #expect(throws: KVDecodingError.self) {
      try restore(target.machine, appliedIndex: source.machine.appliedIndex, from: chunks)
    }
    #expect(target.machine.canonicalState() == before)
    #expect(target.apply(put("existing", "value"), idempotencyKey: "kept").isDuplicate)
  }

  @Test func wrongAppliedIndexIsRefused() {
    let source = Self.populated()
    let target = KVStateMachine()
    #expect(throws: KVDecodingError.self) {
      try restore(
        target, appliedIndex: source.machine.appliedIndex + 1,
        from: serializedChunks(source.machine.snapshot()))
    }
    #expect(target.count == 0)
  }

  struct SourceFailure: Error {}

  @Test func errorsFromTheSourceArePropagated() {
    let source = Self.populated()
    var chunks = serializedChunks(source.machine.snapshot(), chunkBytes: 256).makeIterator()
    var served = 0
    let target = KVStateMachine()
    #expect(throws: SourceFailure.self) {
      try target.restore(appliedIndex: source.machine.appliedIndex) {
        served += 1
        if served == 5 { throw SourceFailure() }
        return chunks.next()
      }
    }
    #expect(target.count == 0)
    #expect(target.appliedIndex == 0)
  }

  /// Every truncation of a small snapshot is detected.
  @Test func everyTruncationIsDetected() {
    let driver = Driver()
    driver.apply(put(["a": "1", "b": "22"]), idempotencyKey: "k")
    let stream = serializedChunks(driver.machine.snapshot()).flatMap { $0 }
    for length in 0..<stream.count {
      var decoder = KVSnapshotDecoder()
      #expect(throws: KVDecodingError.self) {
        try decoder.feed(Array(stream[..<length]))
        _ = try decoder.finish()
      }
    }
  }

  /// Flip every bit of a small snapshot: each flip is caught (checksums), never trapping.
  @Test func everyBitFlipIsDetected() {
    let driver = Driver()
    driver.apply(put(["a": "1", "b": "22"]), idempotencyKey: "k")
    let stream = serializedChunks(driver.machine.snapshot()).flatMap { $0 }
    for bit in 0..<stream.count * 8 {
      var corrupt = stream
      corrupt[bit / 8] ^= UInt8(1) << UInt8(bit % 8)
      var decoder = KVSnapshotDecoder()
      #expect(throws: KVDecodingError.self) {
        try decoder.feed(corrupt)
        _ = try decoder.finish()
      }
    }
  }
}

extension SnapshotTests {
  @Test(arguments: [Int.min, -1, 0, Int.max])
  func extremeChunkSizesStillWork(chunkBytes: Int) throws {
    let original = Self.populated()
    let chunks = serializedChunks(original.machine.snapshot(), chunkBytes: chunkBytes)
    let restored = KVStateMachine()
    try restore(restored, appliedIndex: original.machine.appliedIndex, from: chunks)
    #expect(restored.canonicalState() == original.machine.canonicalState())
  }
}
