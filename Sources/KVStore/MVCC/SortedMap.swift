/// A persistent ordered map from byte-string keys to values: a B-tree of up to `maxEntries` keys a
/// node, copied on write node by node. A copy of the map is a copy of its root reference, O(1), and
/// never changes afterwards, so a frozen copy can be read or serialized on another thread while the
/// owner goes on writing (the MVCC store's snapshots and `stale` reads need this).
///
/// Why a B-tree copied on write rather than a path-copying binary tree (what this was before): a
/// write changes a node in place when `isKnownUniquelyReferenced` says this map alone holds it (from
/// the root down), and copies only the nodes that some other copy still shares. A map that nobody
/// has copied since its last write therefore inserts with no allocation at all most of the time (a
/// split now and then), where the binary tree allocated about log2(n) nodes, 20 for a million keys,
/// on every insert. A lookup visits five nodes for a million keys where the binary tree visited
/// about twenty, and an entry keeps its key's first eight bytes beside it, so that a search within
/// a node orders most keys without following the pointer to their bytes.
///
/// The price is paid after a copy: a write then copies each shared node on its path, whole, so the
/// first write below a node after the map was copied costs more than the binary tree's path copy
/// did (about 8 µs against 6 µs at a million keys); the writes after it change the copies in place.
///
/// Keys are ordered as unsigned bytes (memcmp order, as etcd orders keys). Every node records the
/// number of keys in its subtree, so counting the keys between two bounds is O(log n).
///
/// Why not a library: swift-collections 1.6 has a B-tree `SortedDictionary`, but only as a prototype
/// behind its `UnstableSortedCollections` trait, which its authors call not ready for production use
/// and promise source-breaking changes to; it also needs `Comparable` keys, which `[UInt8]` is not.
/// Its `TreeDictionary` is a hash trie, unordered. No other well-kept Swift package in the local
/// mirror has an ordered persistent map.
public struct SortedMap<Value: Sendable>: Sendable {
  struct Entry {
    var key: [UInt8]
    /// `keyPrefix(key)`, beside the value so that a search orders most keys without reading them.
    var prefix: UInt64
    var value: Value

    init(key: [UInt8], prefix: UInt64, value: Value) {
      self.key = key
      self.prefix = prefix
      self.value = value
    }
  }

  /// A B-tree node: `entries` in ascending key order and, unless it is a leaf, one more child than
  /// entries, `children[i]` holding the keys between `entries[i - 1]` and `entries[i]`. Every leaf
  /// is at the same depth; every node but the root holds `minEntries...maxEntries` entries.
  ///
  /// `@unchecked Sendable` although its fields are `var`: a node is changed only by the map value
  /// that holds it uniquely, found so by `isKnownUniquelyReferenced` on the root and on every child
  /// reference down to it (each inside a node that is itself unique). So no other map value, and no
  /// other thread, can reach a node while it changes; a node that is shared is copied, never
  /// changed, and a frozen copy keeps reading the nodes it shares.
  final class Node: @unchecked Sendable {
    var entries: [Entry]
    /// Empty in a leaf.
    var children: [Node]
    /// The number of keys in this subtree.
    var count: Int

    init(entries: [Entry], children: [Node], count: Int) {
      self.entries = entries
      self.children = children
      self.count = count
    }

    var isLeaf: Bool { children.isEmpty }

    /// A copy to change in place of this shared node. It shares the arrays' buffers until its first
    /// change, which copies them (the arrays' own copy on write); the children stay shared.
    func copy() -> Node { Node(entries: entries, children: children, count: count) }

    /// The first index whose key is not below `key`, and whether its key is `key`.
    @inline(__always)
    func search(_ key: [UInt8], _ prefix: UInt64) -> (index: Int, found: Bool) {
      entries.withUnsafeBufferPointer { entries in
        var low = 0
        var high = entries.count
        while low < high {
          let middle = (low &+ high) >> 1
          let entryPrefix = entries[middle].prefix
          let order =
            entryPrefix != prefix ? (entryPrefix < prefix ? -1 : 1) : compareKeys(entries[middle].key, key)
          if order < 0 {
            low = middle &+ 1
          } else if order > 0 {
            high = middle
          } else {
            return (middle, true)
          }
        }
        return (low, false)
      }
    }

    /// Child `index`, copied first if another node shares it, so that the caller may change it.
    @inline(__always)
    func makeChildUnique(_ index: Int) {
      if !isKnownUniquelyReferenced(&children[index]) { children[index] = children[index].copy() }
    }

    // MARK: Insertion (on a node this map holds uniquely)

    /// Inserts or replaces `key` in this subtree. Returns whether the key is new and, when this
    /// node overflowed, the separator and the new right sibling that the parent must take.
    func insert(_ value: Value, forKey key: [UInt8], _ prefix: UInt64) -> (added: Bool, split: (Entry, Node)?)
    {
      let (index, found) = search(key, prefix)
      if found {
        entries[index].value = value
        return (false, nil)
      }
      if isLeaf {
        entries.insert(Entry(key: key, prefix: prefix, value: value), at: index)
      } else {
        makeChildUnique(index)
        let (added, split) = children[index].insert(value, forKey: key, prefix)
        guard added else { return (false, nil) }
        if let (separator, right) = split {
          entries.insert(separator, at: index)
          children.insert(right, at: index + 1)
        }
      }
      count += 1
      guard entries.count > maxEntries else { return (true, nil) }
      // Keys arriving in ascending order (the revision index, a compaction's rebuild) always split
      // the last node; splitting it unevenly leaves the nodes behind three-quarters full, not half.
      return (true, split(ascending: index == entries.count - 1))
    }

    /// Moves the upper entries of this overfull node into a new right sibling; returns the
    /// separator between the two and the sibling.
    private func split(ascending: Bool) -> (Entry, Node) {
      let middle = ascending ? maxEntries - minEntries : entries.count / 2
      let separator = entries[middle]
      let right = Node(
        entries: Self.reserved(entries[(middle + 1)...]),
        children: isLeaf ? [] : Self.reserved(children[(middle + 1)...]), count: 0)
      entries.removeSubrange(middle...)
      if !isLeaf { children.removeSubrange((middle + 1)...) }
      right.count = right.entries.count + right.children.reduce(0) { $0 + $1.count }
      count -= right.count + 1
      return (separator, right)
    }

    /// `elements` in an array with room for a full node, so that it fills without reallocating.
    static func reserved<Element>(_ elements: ArraySlice<Element>) -> [Element] {
      var array: [Element] = []
      array.reserveCapacity(maxEntries + 2)
      array.append(contentsOf: elements)
      return array
    }

    // MARK: Removal (on a node this map holds uniquely, of a key that is in its subtree)

    func remove(_ key: [UInt8], _ prefix: UInt64) {
      let (index, found) = search(key, prefix)
      count -= 1
      if isLeaf {
        precondition(found, "remove: the key is in the subtree")
        entries.remove(at: index)
        return
      }
      makeChildUnique(index)
      if found {
        // The key's predecessor, the greatest key of the subtree before it, takes its place.
        entries[index] = children[index].removeLast()
      } else {
        children[index].remove(key, prefix)
      }
      refill(index)
    }

    /// Removes and returns the greatest entry of this subtree.
    func removeLast() -> Entry {
      count -= 1
      if isLeaf { return entries.removeLast() }
      let last = children.count - 1
      makeChildUnique(last)
      let entry = children[last].removeLast()
      refill(last)
      return entry
    }

    /// Brings child `index` back to `minEntries` after a removal below it left it one short: it
    /// borrows an entry through the separator from a sibling that can spare one, or else merges
    /// with a sibling.
    private func refill(_ index: Int) {
      guard children[index].entries.count < minEntries else { return }
      if index > 0 && children[index - 1].entries.count > minEntries {
        makeChildUnique(index - 1)
        let left = children[index - 1]
        let child = children[index]
        child.entries.insert(entries[index - 1], at: 0)
        entries[index - 1] = left.entries.removeLast()
        var moved = 1
        if !child.isLeaf {
          let grandchild = left.children.removeLast()
          moved += grandchild.count
          child.children.insert(grandchild, at: 0)
        }
        left.count -= moved
        child.count += moved
      } else if index + 1 < children.count && children[index + 1].entries.count > minEntries {
        makeChildUnique(index + 1)
        let right = children[index + 1]
        let child = children[index]
        child.entries.append(entries[index])
        entries[index] = right.entries.removeFirst()
        var moved = 1
        if !child.isLeaf {
          let grandchild = right.children.removeFirst()
          moved += grandchild.count
          child.children.append(grandchild)
        }
        right.count -= moved
        child.count += moved
      } else {
        merge(index > 0 ? index - 1 : index)
      }
    }

    /// Merges child `index + 1`, and the separator before it, into child `index`. Both are at
    /// most `minEntries` then, so the result fits in a node. The right child is only read, so it
    /// may stay shared.
    private func merge(_ index: Int) {
      makeChildUnique(index)
      let left = children[index]
      let right = children.remove(at: index + 1)
      left.entries.append(entries.remove(at: index))
      left.entries.append(contentsOf: right.entries)
      left.children.append(contentsOf: right.children)
      left.count += 1 + right.count
    }
  }

  /// The most entries a node holds. Measured with a million random 16-byte keys: 16 inserted in
  /// place about 20% slower (six levels) and copied paths about 15% faster; 64 was no faster in
  /// place and copied paths twice as slowly.
  static var maxEntries: Int { 32 }
  /// The fewest entries a node other than the root holds. A quarter rather than the textbook half,
  /// so that an ascending split can leave three quarters behind (`Node.insert`); a merge of a node
  /// one short with a sibling at this minimum still fits.
  static var minEntries: Int { maxEntries / 4 }

  private var root: Node?

  public init() {}

  public var count: Int { root?.count ?? 0 }
  public var isEmpty: Bool { root == nil }

  public subscript(key: [UInt8]) -> Value? {
    let prefix = keyPrefix(key)
    var node = root
    while let current = node {
      let (index, found) = current.search(key, prefix)
      if found { return current.entries[index].value }
      node = current.isLeaf ? nil : current.children[index]
    }
    return nil
  }

  /// Inserts `value` under `key`, replacing any value there.
  public mutating func insert(_ value: Value, forKey key: [UInt8]) {
    guard root != nil else {
      root = Node(
        entries: Node.reserved([Entry(key: key, prefix: keyPrefix(key), value: value)][...]), children: [],
        count: 1)
      return
    }
    if !isKnownUniquelyReferenced(&root) { root = root!.copy() }
    if let (separator, right) = root!.insert(value, forKey: key, keyPrefix(key)).split {
      let left = root!
      root = Node(
        entries: Node.reserved([separator][...]), children: Node.reserved([left, right][...]),
        count: left.count + 1 + right.count)
    }
  }

  /// Removes `key`; returns whether it was there.
  @discardableResult
  public mutating func remove(_ key: [UInt8]) -> Bool {
    // Looked up first, so that removing an absent key copies no node of a shared tree.
    guard contains(key) else { return false }
    if !isKnownUniquelyReferenced(&root) { root = root!.copy() }
    root!.remove(key, keyPrefix(key))
    if root!.entries.isEmpty { root = root!.isLeaf ? nil : root!.children[0] }
    return true
  }

  private func contains(_ key: [UInt8]) -> Bool {
    let prefix = keyPrefix(key)
    var node = root
    while let current = node {
      let (index, found) = current.search(key, prefix)
      if found { return true }
      node = current.isLeaf ? nil : current.children[index]
    }
    return false
  }

  /// Visits the keys in `[lower, upper)` in ascending order (`upper` nil: to the end) until `body`
  /// returns false. O(log n) to find the start, then O(1) amortized per key.
  public func forEach(from lower: [UInt8], below upper: [UInt8]?, _ body: ([UInt8], Value) throws -> Bool)
    rethrows
  {
    guard let root else { return }
    _ = try Self.visit(root, from: lower, below: upper, body)
  }

  /// Visits the keys of `node`'s subtree from `lower` (nil: from its first) below `upper`; returns
  /// false once the walk is over (`upper` reached or `body` said stop).
  private static func visit(
    _ node: Node, from lower: [UInt8]?, below upper: [UInt8]?, _ body: ([UInt8], Value) throws -> Bool
  ) rethrows -> Bool {
    // With a lower bound: child `start` holds keys below `lower` when `entries[start]` is `lower`
    // itself, and otherwise the keys between the last one below and the first one above.
    let (start, found) = lower.map { node.search($0, keyPrefix($0)) } ?? (0, false)
    let leaf = node.isLeaf
    for index in start..<node.entries.count {
      if !leaf && !(found && index == start) {
        guard try visit(node.children[index], from: index == start ? lower : nil, below: upper, body) else {
          return false
        }
      }
      let entry = node.entries[index]
      if let upper, compareKeys(entry.key, upper) >= 0 { return false }
      guard try body(entry.key, entry.value) else { return false }
    }
    if leaf { return true }
    let last = node.entries.count
    return try visit(node.children[last], from: start == last ? lower : nil, below: upper, body)
  }

  /// How many keys are in `[lower, upper)` (`upper` nil: to the end), in O(log n).
  public func count(from lower: [UInt8], below upper: [UInt8]?) -> Int {
    Swift.max(0, (upper.map(rank) ?? count) - rank(lower))
  }

  /// The number of keys below `key`: one walk down the tree, adding at each level the keys of the
  /// entries and subtrees left of the path.
  private func rank(_ key: [UInt8]) -> Int {
    let prefix = keyPrefix(key)
    var below = 0
    var node = root
    while let current = node {
      let (index, found) = current.search(key, prefix)
      below += index
      if current.isLeaf { return below }
      for child in current.children[..<index] { below += child.count }
      if found { return below + current.children[index].count }
      node = current.children[index]
    }
    return below
  }

  /// The number of levels (for tests of the balance): every leaf is this deep.
  var height: Int {
    var levels = 0
    var node = root
    while let current = node {
      levels += 1
      node = current.children.first
    }
    return levels
  }

  /// The number of nodes (for tests of how full they are).
  var nodeCount: Int {
    func nodes(_ node: Node) -> Int { node.children.reduce(1) { $0 + nodes($1) } }
    return root.map(nodes) ?? 0
  }

  /// What breaks the B-tree's invariants, empty when nothing does (for tests): keys ascending
  /// through the whole tree, every leaf at one depth, `minEntries...maxEntries` entries in every
  /// node but the root (which has at least one), one more child than entries in an internal node,
  /// and subtree counts that add up.
  func invariantViolations() -> [String] {
    var violations: [String] = []
    var previous: [UInt8]?
    var leafDepth: Int?
    func check(_ node: Node, depth: Int, isRoot: Bool) {
      let entries = node.entries.count
      if entries > Self.maxEntries || entries < (isRoot ? 1 : Self.minEntries) {
        violations.append("a node at depth \(depth) holds \(entries) entries")
      }
      if node.isLeaf {
        if leafDepth == nil { leafDepth = depth }
        if leafDepth != depth { violations.append("leaves at depths \(leafDepth!) and \(depth)") }
      } else if node.children.count != entries + 1 {
        violations.append("a node with \(entries) entries has \(node.children.count) children")
      }
      var count = entries
      for index in 0...entries {
        if !node.isLeaf && index < node.children.count {
          check(node.children[index], depth: depth + 1, isRoot: false)
          count += node.children[index].count
        }
        guard index < entries else { break }
        let key = node.entries[index].key
        if let previous, compareKeys(previous, key) >= 0 {
          violations.append("key \(key) follows \(previous)")
        }
        previous = key
      }
      if count != node.count { violations.append("a node counts \(node.count) keys but holds \(count)") }
    }
    if let root { check(root, depth: 1, isRoot: true) }
    return violations
  }
}

/// A key's first eight bytes as a big-endian number, zeros after a shorter key: two keys whose
/// prefixes differ are in the order of their prefixes (a shorter key is then a prefix of the other,
/// or differs from it within its length), so only keys with equal prefixes need their bytes compared.
@inline(__always)
func keyPrefix(_ key: [UInt8]) -> UInt64 {
  key.withUnsafeBytes { bytes in
    if bytes.count >= 8 { return UInt64(bigEndian: bytes.loadUnaligned(as: UInt64.self)) }
    var prefix: UInt64 = 0
    for index in 0..<bytes.count { prefix |= UInt64(bytes[index]) << (56 - 8 * index) }
    return prefix
  }
}

/// Byte order of two keys (negative, zero, positive), as memcmp then length.
@inline(__always)
func compareKeys(_ left: [UInt8], _ right: [UInt8]) -> Int {
  left.withUnsafeBytes { left in right.withUnsafeBytes { right in compareBytes(left, right) } }
}
