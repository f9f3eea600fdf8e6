/// How one operation acts on the register once values are interned. Unknown-outcome operations get
/// their own kinds because the search treats them differently: they have no deadline, may be
/// omitted, and are only worth linearizing when they change the value.
enum StepKind: UInt8 {
  case read
  case write
  case casSucceeded
  case casFailed
  case unknownWrite
  case unknownCas
}

/// One key's sub-history reduced to what the search needs: values become small integers (0 is
/// "absent"), so that a model state is one `Int32` and every comparison is an integer compare.
///
/// Operations are stored acknowledged-first (indices `0..<knownCount`) and then unknown-outcome ones,
/// each group sorted by invocation time, which is the order the search's candidate lists use.
struct KeyProblem {
  /// The original operations kept, index-aligned with the arrays below, and their positions in the
  /// input.
  var source: [Operation] = []
  var origin: [Int] = []
  var knownCount = 0
  /// Interned values; index 0 is absent.
  var values: [String?] = [nil]
  /// The id standing for every value that no operation reads or expects, when those are merged.
  var unobserved: Int32?
  var kind: [StepKind] = []
  /// read: observed value; write: written value; cas: expected value.
  var a: [Int32] = []
  /// cas: new value.
  var b: [Int32] = []
  var invokedAt: [UInt64] = []
  /// `UInt64.max` for unknown outcomes.
  var completedAt: [UInt64] = []

  var count: Int { kind.count }
  var unknownCount: Int { count - knownCount }

  /// Drops what cannot constrain the result: failed operations never took effect, and a read whose
  /// answer was lost observed nothing.
  ///
  /// With `mergeUnobservedValues`, every value that no read or compare-and-set ever looks for becomes
  /// one value. The register behaves identically in all such states (every read and successful
  /// compare-and-set fails, every failed one succeeds), so the verdict is unchanged, while the memo
  /// sees more configurations as equal and all unknown writes of such values become interchangeable.
  /// Reports turn it off so that they can name the actual values.
  init(_ operations: [Operation], mergeUnobservedValues: Bool = true) {
    var known: [Int] = []
    var unknown: [Int] = []
    for (index, operation) in operations.enumerated() {
      switch operation.outcome {
      case .failed: continue
      case .ok: known.append(index)
      case .unknown:
        if case .read = operation.call { continue }
        unknown.append(index)
      }
    }
    let order = { (left: Int, right: Int) in
      (operations[left].invokedAt, operations[left].id, left)
        < (operations[right].invokedAt, operations[right].id, right)
    }
    known.sort(by: order)
    unknown.sort(by: order)
    knownCount = known.count
    origin = known + unknown
    source = origin.map { operations[$0] }
    var interned: [[UInt8]: Int32] = [:]
    func intern(_ value: String?) -> Int32 {
      guard let value else { return 0 }
      let bytes = Array(value.utf8)
      if let id = interned[bytes] { return id }
      let id = Int32(values.count)
      values.append(value)
      interned[bytes] = id
      return id
    }
    kind.reserveCapacity(source.count)
    for operation in source {
      var step: StepKind
      var first: Int32 = 0
      var second: Int32 = 0
      let isKnown: Bool
      if case .ok = operation.outcome { isKnown = true } else { isKnown = false }
      switch (operation.call, operation.outcome) {
      case (.read, .ok(.value(let observed))):
        step = .read
        first = intern(observed)
      case (.write(let value), _):
        step = isKnown ? .write : .unknownWrite
        first = intern(value)
      case (.delete, _):
        step = isKnown ? .write : .unknownWrite
      case (.cas(let expected, let new), .ok(.cas(let succeeded))):
        step = succeeded ? .casSucceeded : .casFailed
        first = intern(expected)
        second = intern(new)
      case (.cas(let expected, let new), _):
        step = .unknownCas
        first = intern(expected)
        second = intern(new)
      default:
        preconditionFailure("validated histories pair every call with a matching response")
      }
      kind.append(step)
      a.append(first)
      b.append(second)
      invokedAt.append(operation.invokedAt)
      completedAt.append(isKnown ? operation.completedAt! : UInt64.max)
    }
    if mergeUnobservedValues { mergeUnobserved() }
  }

  private mutating func mergeUnobserved() {
    var observed = [Bool](repeating: false, count: values.count)
    observed[0] = true  // the initial value; kept distinct so that it can be named
    for index in kind.indices where kind[index] != .write && kind[index] != .unknownWrite {
      observed[Int(a[index])] = true
    }
    guard observed.contains(false) else { return }
    let merged = Int32(values.count)
    values.append(nil)
    unobserved = merged
    for index in kind.indices {
      switch kind[index] {
      case .write, .unknownWrite:
        if !observed[Int(a[index])] { a[index] = merged }
      case .casSucceeded, .casFailed, .unknownCas:
        if !observed[Int(b[index])] { b[index] = merged }
      case .read: break
      }
    }
  }

  /// Whether `op` is an unknown operation whose only possible effect is to set an unobserved value.
  func producesUnobserved(_ op: Int) -> Bool {
    guard let unobserved, op >= knownCount else { return false }
    return kind[op] == .unknownWrite ? a[op] == unobserved : b[op] == unobserved
  }
}
