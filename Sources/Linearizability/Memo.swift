/// The search configurations already explored: (linearized operations, register value, whether an
/// observer is owed). Revisiting one can never succeed where the first visit failed, which is what
/// keeps the Wing–Gong search from re-exploring the same interleavings exponentially often (Lowe's
/// memoization).
///
/// Lookups go further than equality: a configuration is also covered by an explored one with the same
/// acknowledged operations and value but fewer linearized unknown-outcome operations (a subset of the
/// identified ones, and no more anonymous writes of dead values). An unknown operation has no deadline and may be omitted, so
/// having one still pending only adds options; if the configuration with more options failed, this one
/// fails too. Without this, every unknown write that a branch spends needlessly (say, before a failed
/// compare-and-set) leads to a re-run of the rest of the history that differs only in that spent
/// write. For this the hash covers only the acknowledged operations and the tag, so the candidates
/// share a probe sequence.
///
/// The acknowledged part is stored compactly, because in a long history nearly all of it is a solid
/// prefix: as the first unlinearized operation (in invocation order) `low` plus the bit words from
/// `low`'s word through the last linearized one. The set is stored exactly rather than as a
/// fingerprint, so a hash collision can cost time but never a wrong verdict. Open addressing over flat
/// arrays, so an insertion allocates only when the table grows.
struct Memo {
  private(set) var count = 0
  private var slots: [Int32]
  private var mask: Int
  private var hashes: [UInt64] = []
  private var tags: [Int32] = []
  private var lows: [Int32] = []
  private var spans: [Int32] = []
  private var offsets: [Int] = []
  private var deadSpents: [Int32] = []
  private var words: [UInt64] = []
  private let unknownWords: Int

  init(unknownWords: Int) {
    self.unknownWords = unknownWords
    slots = [Int32](repeating: -1, count: 1024)
    mask = 1023
  }

  /// Memory held, roughly; what bounds long searches.
  var storedBytes: Int { words.count * 8 + count * 40 + slots.count * 4 }

  /// Records the configuration and reports whether no explored one covers it. `known[firstWord...]`
  /// (`span` words) is the compact acknowledged part, `unknown` the unknown-outcome bits.
  mutating func insert(
    hash: UInt64, tag: Int32, low: Int32, known: [UInt64], firstWord: Int, span: Int,
    unknown: [UInt64], deadSpent: Int32
  ) -> Bool {
    var slot = Int(truncatingIfNeeded: hash) & mask
    while true {
      let entry = Int(slots[slot])
      if entry < 0 { break }
      if hashes[entry] == hash && tags[entry] == tag && lows[entry] == low
        && Int(spans[entry]) == span && deadSpents[entry] <= deadSpent
        && covers(entry, known: known, firstWord: firstWord, span: span, unknown: unknown)
      {
        return false
      }
      slot = (slot + 1) & mask
    }
    slots[slot] = Int32(count)
    hashes.append(hash)
    tags.append(tag)
    lows.append(low)
    spans.append(Int32(span))
    deadSpents.append(deadSpent)
    offsets.append(words.count)
    words.append(contentsOf: known[firstWord..<firstWord + span])
    words.append(contentsOf: unknown)
    count += 1
    if count * 2 > slots.count { grow() }
    return true
  }

  private func covers(
    _ entry: Int, known: [UInt64], firstWord: Int, span: Int, unknown: [UInt64]
  ) -> Bool {
    var base = offsets[entry]
    for index in 0..<span where words[base + index] != known[firstWord + index] { return false }
    base += span
    for index in 0..<unknownWords where words[base + index] & ~unknown[index] != 0 { return false }
    return true
  }

  private mutating func grow() {
    let capacity = slots.count * 2
    slots = [Int32](repeating: -1, count: capacity)
    mask = capacity - 1
    for entry in 0..<count {
      var slot = Int(truncatingIfNeeded: hashes[entry]) & mask
      while slots[slot] >= 0 { slot = (slot + 1) & mask }
      slots[slot] = Int32(entry)
    }
  }
}

/// SplitMix64: a cheap, well-mixed 64-bit hash, used for Zobrist keys and value hashes.
@inline(__always)
func mix64(_ input: UInt64) -> UInt64 {
  var z = input &+ 0x9E37_79B9_7F4A_7C15
  z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
  z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
  return z ^ (z >> 31)
}
