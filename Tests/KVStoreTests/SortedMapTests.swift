import Foundation
import Raft
import Testing

@testable import KVStore

/// Seeded random operations on `SortedMap` against a reference (a dictionary and its keys in byte
/// order). The tree must answer like the reference after every step, keep its B-tree invariants,
/// and every copy taken along the way must still hold what the reference held when it was taken,
/// however the original changed since (copies are read on other threads while the owner writes).
@Suite struct SortedMapTests {
  /// The state a map should have: its values, and its keys in byte order.
  struct Reference {
    var values: [[UInt8]: Int] = [:]
    var keys: [[UInt8]] = []

    /// Where `key` is or would go in `keys`.
    func position(_ key: [UInt8]) -> Int {
      var low = 0
      var high = keys.count
      while low < high {
        let middle = (low + high) / 2
        if compareKeys(keys[middle], key) < 0 { low = middle + 1 } else { high = middle }
      }
      return low
    }

    mutating func insert(_ value: Int, forKey key: [UInt8]) {
      if values.updateValue(value, forKey: key) == nil { keys.insert(key, at: position(key)) }
    }

    mutating func remove(_ key: [UInt8]) -> Bool {
      guard values.removeValue(forKey: key) != nil else { return false }
      keys.remove(at: position(key))
      return true
    }

    /// The keys in `[lower, upper)`.
    func keys(from lower: [UInt8], below upper: [UInt8]?) -> ArraySlice<[UInt8]> {
      let start = position(lower)
      let end = upper.map { Swift.max(start, position($0)) } ?? keys.count
      return keys[start..<end]
    }
  }

  /// A stem and then 0 to 4 bytes from an alphabet that has both ends of the byte range and
  /// neighbours, so that prefixes, the empty key and unsigned order all come up. The stems put keys
  /// on both sides of eight bytes, where a node stops telling keys apart by their first eight bytes
  /// alone. 14,043 keys in all: enough for trees three levels deep, while writes still hit existing
  /// keys often.
  static let alphabet: [UInt8] = [0x00, 0x01, 0x61, 0x62, 0x7F, 0x80, 0xFE, 0xFF]
  static let stems: [[UInt8]] = [[], Array("abcdef".utf8), Array("abcdefgh".utf8)]

  static func randomKey(_ random: inout SplitMix64) -> [UInt8] {
    stems.randomElement(using: &random)!
      + (0..<Int.random(in: 0...4, using: &random)).map { _ in alphabet.randomElement(using: &random)! }
  }

  /// A frozen copy and what the reference was when it was taken.
  struct Frozen {
    let map: SortedMap<Int>
    let reference: Reference
    let step: Int
  }

  @Test(arguments: [1, 2, 3, 4, 5, 6] as [UInt64])
  func randomOperationsAgreeWithTheReference(seed: UInt64) throws {
    var random = SplitMix64(seed: seed)
    var map = SortedMap<Int>()
    var reference = Reference()
    var frozen: [Frozen] = []
    var step = 0
    // Grow to thousands of keys (mostly inserts), shrink to empty (mostly removes), twice over.
    for (steps, insertPercent) in [(9_000, 75), (12_000, 20), (3_000, 80), (12_000, 10)] {
      for _ in 0..<steps {
        step += 1
        let key = Self.randomKey(&random)
        if Int.random(in: 0..<100, using: &random) < insertPercent {
          map.insert(step, forKey: key)
          reference.insert(step, forKey: key)
        } else {
          let removed = map.remove(key)
          let expected = reference.remove(key)
          #expect(removed == expected, "seed \(seed) step \(step): remove \(key)")
        }
        #expect(map[key] == reference.values[key], "seed \(seed) step \(step): the key just written")
        #expect(map.count == reference.keys.count, "seed \(seed) step \(step)")
        if Int.random(in: 0..<200, using: &random) == 0 {
          frozen.append(Frozen(map: map, reference: reference, step: step))
        }
        if step % 500 == 0 {
          try Self.check(map, against: reference, &random, "seed \(seed) step \(step)")
          if let copy = frozen.randomElement(using: &random) {
            try Self.check(
              copy.map, against: copy.reference, &random, "seed \(seed) copy of step \(copy.step)")
          }
        }
      }
      // The phases that shrink end on an empty map: remove what the random removes left.
      if insertPercent < 50 {
        for key in reference.keys.shuffled(using: &random) {
          let removed = map.remove(key)
          #expect(removed, "seed \(seed): remove \(key) on the way to empty")
          _ = reference.remove(key)
          #expect(map.count == reference.keys.count)
        }
        #expect(map.isEmpty && map.count == 0 && map.height == 0, "seed \(seed): empty at last")
        let removedFromEmpty = map.remove([0x61])
        #expect(!removedFromEmpty)
        try Self.check(map, against: reference, &random, "seed \(seed): empty")
      }
    }
    #expect(frozen.count > 100, "seed \(seed): enough copies were taken")
    // Every copy, after all the writes that came after it.
    for copy in frozen {
      try Self.check(
        copy.map, against: copy.reference, &random, "seed \(seed) copy of step \(copy.step)", boundedScans: 10
      )
    }
  }

  /// Writes to a copy (removes most of all, which borrow and merge through shared siblings) leave
  /// the original alone.
  @Test func writesToACopyLeaveTheOriginalAlone() throws {
    var random = SplitMix64(seed: 99)
    var original = SortedMap<Int>()
    var reference = Reference()
    for step in 0..<3_000 {
      let key = Self.randomKey(&random)
      original.insert(step, forKey: key)
      reference.insert(step, forKey: key)
    }
    var fork = original
    var forkReference = reference
    for step in 0..<4_000 {
      let key = Self.randomKey(&random)
      if step % 3 == 0 {
        fork.insert(-step, forKey: key)
        forkReference.insert(-step, forKey: key)
      } else {
        let removed = fork.remove(key)
        let expected = forkReference.remove(key)
        #expect(removed == expected)
      }
    }
    try Self.check(fork, against: forkReference, &random, "the fork")
    try Self.check(original, against: reference, &random, "the original after the fork's writes")
  }

  /// Keys in ascending order (the revision index, a compaction's rebuild) split unevenly, so the
  /// nodes left behind are fuller than half; descending and random orders keep the invariants too.
  @Test func ascendingInsertsFillNodesAndEveryOrderStaysBalanced() throws {
    var random = SplitMix64(seed: 7)
    let keys = (0..<50_000).map { i in withUnsafeBytes(of: UInt64(i).bigEndian) { Array($0) } }
    for order in ["ascending", "descending", "random"] {
      var map = SortedMap<Int>()
      let sequence =
        order == "ascending" ? keys : order == "descending" ? keys.reversed() : keys.shuffled(using: &random)
      for (value, key) in sequence.enumerated() { map.insert(value, forKey: key) }
      #expect(map.count == keys.count)
      #expect(map.invariantViolations() == [], "\(order)")
      #expect(map.height <= Self.heightBound(keys.count), "\(order): height \(map.height)")
      #expect(map.height >= Self.heightFloor(keys.count), "\(order): height \(map.height)")
      if order == "ascending" {
        // Three quarters full: about 2,000 leaves of 24 keys and 85 nodes above them, where
        // splits in the middle would leave about 2,900 leaves of 16.
        #expect(map.nodeCount < 2_200, "ascending: \(map.nodeCount) nodes")
      }
      var visited = 0
      map.forEach(from: [], below: nil) { key, _ in
        #expect(key == keys[visited])
        visited += 1
        return true
      }
      #expect(visited == keys.count)
    }
  }

  @Test func forEachStopsWhenTheBodySaysSoAndRethrows() {
    var map = SortedMap<Int>()
    for i in 0..<1_000 { map.insert(i, forKey: Array(String(format: "%04d", i).utf8)) }
    var seen: [Int] = []
    map.forEach(from: Array("0100".utf8), below: nil) { _, value in
      seen.append(value)
      return seen.count < 250
    }
    #expect(seen == Array(100..<350))
    struct Stop: Error {}
    var calls = 0
    #expect(throws: Stop.self) {
      try map.forEach(from: [], below: nil) { _, value in
        calls += 1
        if value == 500 { throw Stop() }
        return true
      }
    }
    #expect(calls == 501)
  }

  /// A frozen copy read on another thread while the owner keeps writing sees its own keys only.
  @Test func aCopyIsReadOnAnotherThreadWhileTheOwnerWrites() async {
    var map = SortedMap<Int>()
    for i in 0..<20_000 { map.insert(i, forKey: withUnsafeBytes(of: UInt32(i * 2).bigEndian) { Array($0) }) }
    let frozen = map
    let reader = Task.detached {
      var mismatches = 0
      for _ in 0..<20 {
        var expected = 0
        frozen.forEach(from: [], below: nil) { key, value in
          if value != expected || key != withUnsafeBytes(of: UInt32(expected * 2).bigEndian, { Array($0) }) {
            mismatches += 1
          }
          expected += 1
          return true
        }
        if expected != 20_000 { mismatches += 1 }
      }
      return mismatches
    }
    for round in 0..<20 {
      for i in 0..<20_000 {
        let key = withUnsafeBytes(of: UInt32(i * 2 + round % 2).bigEndian) { Array($0) }
        if round % 2 == 0 { map.insert(-i, forKey: key) } else { map.remove(key) }
      }
    }
    #expect(await reader.value == 0)
    #expect(frozen.count == 20_000 && frozen.invariantViolations() == [])
  }

  // MARK: - Checks

  /// Checks `map` against `reference` whole: the invariants, every key's value, a scan of every
  /// key, and random bounded scans, early stops and counts.
  static func check(
    _ map: SortedMap<Int>, against reference: Reference, _ random: inout SplitMix64, _ label: String,
    boundedScans: Int = 40
  ) throws {
    #expect(map.invariantViolations() == [], "\(label)")
    #expect(map.count == reference.keys.count, "\(label)")
    #expect(map.isEmpty == reference.keys.isEmpty, "\(label)")
    #expect(map.height <= heightBound(reference.keys.count), "\(label): height \(map.height)")
    var all: [([UInt8], Int)] = []
    map.forEach(from: [], below: nil) { key, value in
      all.append((key, value))
      return true
    }
    try #require(
      firstDifference(all.map(\.0), reference.keys) == nil,
      "\(label): a scan of every key: \(firstDifference(all.map(\.0), reference.keys) ?? "")")
    #expect(all.allSatisfy { reference.values[$0.0] == $0.1 }, "\(label): the values of a scan")
    #expect(reference.keys.allSatisfy { map[$0] == reference.values[$0] }, "\(label): lookups")
    for _ in 0..<boundedScans {
      let lower = randomKey(&random)
      let upper = Int.random(in: 0..<4, using: &random) == 0 ? nil : randomKey(&random)
      let expected = reference.keys(from: lower, below: upper)
      #expect(
        map.count(from: lower, below: upper) == expected.count, "\(label): count [\(lower), \(upper as Any))")
      var scanned: [[UInt8]] = []
      let limit =
        Int.random(in: 0..<4, using: &random) == 0 ? Int.random(in: 1...20, using: &random) : Int.max
      var wrongValues = 0
      map.forEach(from: lower, below: upper) { key, value in
        if reference.values[key] != value { wrongValues += 1 }
        scanned.append(key)
        return scanned.count < limit
      }
      #expect(wrongValues == 0, "\(label): values of a scan from \(lower)")
      #expect(
        firstDifference(scanned, Array(expected.prefix(limit))) == nil,
        "\(label): scan [\(lower), \(upper as Any)) limit \(limit)")
      #expect(map[lower] == reference.values[lower], "\(label): lookup of \(lower)")
    }
  }

  /// Where two key lists part, in a line short enough to read (the lists can hold thousands).
  static func firstDifference(_ actual: [[UInt8]], _ expected: [[UInt8]]) -> String? {
    guard actual != expected else { return nil }
    let common = Swift.min(actual.count, expected.count)
    let index = (0..<common).first { actual[$0] != expected[$0] } ?? common
    let found = index < actual.count ? "\(actual[index])" : "the end"
    let wanted = index < expected.count ? "\(expected[index])" : "the end"
    return
      "\(actual.count) keys where \(expected.count) were expected; at \(index) \(found) where \(wanted) was expected"
  }

  /// The most levels a tree of `count` keys may have: the root holds one key or more and every
  /// other node at least `minEntries`, so height h takes at least 2 (minEntries + 1)^(h-1) - 1 keys.
  static func heightBound(_ count: Int) -> Int {
    guard count > 0 else { return 0 }
    let children = SortedMap<Int>.minEntries + 1
    var height = 1
    var fewest = 1
    while true {
      fewest = (fewest + 1) * children - 1
      guard fewest <= count else { return height }
      height += 1
    }
  }

  /// The fewest levels a tree of `count` keys may have, with every node full.
  static func heightFloor(_ count: Int) -> Int {
    var height = 0
    var most = 0
    while most < count {
      most = (most + 1) * (SortedMap<Int>.maxEntries + 1) - 1
      height += 1
    }
    return height
  }
}
