/// A persistent ordered map from byte-string keys to values: an AVL tree whose updates copy only the
/// O(log n) nodes on the path they change and share the rest. A copy of the map is a copy of its
/// root, O(1), and never changes afterwards, so a frozen copy can be read or serialized on another
/// thread while the owner goes on writing (the MVCC store's snapshots and `stale` reads need this).
///
/// Keys are ordered as unsigned bytes (memcmp order, as etcd orders keys). Every node records the
/// size of its subtree, so counting the keys between two bounds is O(log n).
///
/// Why not a library: swift-collections 1.6 has no ordered persistent map (its `TreeDictionary` is
/// a hash trie, unordered), and no other well-kept Swift package in the local mirror has one.
public struct SortedMap<Value: Sendable>: Sendable {
  final class Node: Sendable {
    let key: [UInt8]
    let value: Value
    let left: Node?
    let right: Node?
    let height: Int32
    let count: Int

    init(_ key: [UInt8], _ value: Value, _ left: Node?, _ right: Node?) {
      self.key = key
      self.value = value
      self.left = left
      self.right = right
      height = Swift.max(left?.height ?? 0, right?.height ?? 0) + 1
      count = (left?.count ?? 0) + (right?.count ?? 0) + 1
    }
  }

  private var root: Node?

  public init() {}

  public var count: Int { root?.count ?? 0 }
  public var isEmpty: Bool { root == nil }

  public subscript(key: [UInt8]) -> Value? {
    var node = root
    while let current = node {
      let order = compareKeys(key, current.key)
      if order == 0 { return current.value }
      node = order < 0 ? current.left : current.right
    }
    return nil
  }

  /// Inserts `value` under `key`, replacing any value there.
  public mutating func insert(_ value: Value, forKey key: [UInt8]) {
    root = Self.insert(value, forKey: key, into: root)
  }

  /// Removes `key`; returns whether it was there.
  @discardableResult
  public mutating func remove(_ key: [UInt8]) -> Bool {
    let (newRoot, removed) = Self.remove(key, from: root)
    if removed { root = newRoot }
    return removed
  }

  /// Visits the keys in `[lower, upper)` in ascending order (`upper` nil: to the end) until `body`
  /// returns false. O(log n) to find the start, then O(1) amortized per key.
  public func forEach(from lower: [UInt8], below upper: [UInt8]?, _ body: ([UInt8], Value) throws -> Bool)
    rethrows
  {
    var stack: [Node] = []
    stack.reserveCapacity(Int(root?.height ?? 0))
    var node = root
    while let current = node {
      if compareKeys(current.key, lower) >= 0 {
        stack.append(current)
        node = current.left
      } else {
        node = current.right
      }
    }
    while let current = stack.popLast() {
      if let upper, compareKeys(current.key, upper) >= 0 { return }
      guard try body(current.key, current.value) else { return }
      var next = current.right
      while let child = next {
        stack.append(child)
        next = child.left
      }
    }
  }

  /// How many keys are in `[lower, upper)` (`upper` nil: to the end), in O(log n).
  public func count(from lower: [UInt8], below upper: [UInt8]?) -> Int {
    Swift.max(0, (upper.map(rank) ?? count) - rank(lower))
  }

  /// The number of keys below `key`.
  private func rank(_ key: [UInt8]) -> Int {
    var below = 0
    var node = root
    while let current = node {
      if compareKeys(current.key, key) < 0 {
        below += (current.left?.count ?? 0) + 1
        node = current.right
      } else {
        node = current.left
      }
    }
    return below
  }

  /// The tree's height (for tests of its balance).
  var height: Int { Int(root?.height ?? 0) }

  // MARK: - AVL with path copying

  private static func height(_ node: Node?) -> Int32 { node?.height ?? 0 }

  /// A node over `left` and `right`, rotated back into balance when their heights differ by two
  /// (they never differ by more after one insert or remove).
  private static func balanced(_ key: [UInt8], _ value: Value, _ left: Node?, _ right: Node?) -> Node {
    let leftHeight = height(left)
    let rightHeight = height(right)
    if leftHeight > rightHeight + 1, let left {
      if height(left.left) >= height(left.right) {
        return Node(left.key, left.value, left.left, Node(key, value, left.right, right))
      }
      let pivot = left.right!
      return Node(
        pivot.key, pivot.value, Node(left.key, left.value, left.left, pivot.left),
        Node(key, value, pivot.right, right))
    }
    if rightHeight > leftHeight + 1, let right {
      if height(right.right) >= height(right.left) {
        return Node(right.key, right.value, Node(key, value, left, right.left), right.right)
      }
      let pivot = right.left!
      return Node(
        pivot.key, pivot.value, Node(key, value, left, pivot.left),
        Node(right.key, right.value, pivot.right, right.right))
    }
    return Node(key, value, left, right)
  }

  private static func insert(_ value: Value, forKey key: [UInt8], into node: Node?) -> Node {
    guard let node else { return Node(key, value, nil, nil) }
    let order = compareKeys(key, node.key)
    if order < 0 {
      return balanced(node.key, node.value, insert(value, forKey: key, into: node.left), node.right)
    }
    if order > 0 {
      return balanced(node.key, node.value, node.left, insert(value, forKey: key, into: node.right))
    }
    return Node(node.key, value, node.left, node.right)
  }

  private static func remove(_ key: [UInt8], from node: Node?) -> (Node?, removed: Bool) {
    guard let node else { return (nil, false) }
    let order = compareKeys(key, node.key)
    if order < 0 {
      let (left, removed) = remove(key, from: node.left)
      return removed ? (balanced(node.key, node.value, left, node.right), true) : (node, false)
    }
    if order > 0 {
      let (right, removed) = remove(key, from: node.right)
      return removed ? (balanced(node.key, node.value, node.left, right), true) : (node, false)
    }
    guard let left = node.left else { return (node.right, true) }
    guard let right = node.right else { return (left, true) }
    let (successor, rest) = removeFirst(right)
    return (balanced(successor.key, successor.value, left, rest), true)
  }

  private static func removeFirst(_ node: Node) -> (first: Node, rest: Node?) {
    guard let left = node.left else { return (node, node.right) }
    let (first, rest) = removeFirst(left)
    return (first, balanced(node.key, node.value, rest, node.right))
  }
}

/// Byte order of two keys (negative, zero, positive), as memcmp then length.
@inline(__always)
func compareKeys(_ left: [UInt8], _ right: [UInt8]) -> Int {
  left.withUnsafeBytes { left in right.withUnsafeBytes { right in compareBytes(left, right) } }
}
