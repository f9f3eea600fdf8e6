/// A point in the replicated log: Raft identifies an entry by its index together with the term of
/// the leader that created it (two entries with the same index and term are the same entry).
public struct LogPosition: Hashable, Comparable, Sendable, CustomStringConvertible {
  public var index: UInt64
  public var term: UInt64

  public init(index: UInt64, term: UInt64) {
    self.index = index
    self.term = term
  }

  /// The position before the first entry of an empty log.
  public static let zero = LogPosition(index: 0, term: 0)

  /// Orders positions the way the election restriction compares logs: by term, then by index.
  public static func < (lhs: LogPosition, rhs: LogPosition) -> Bool {
    lhs.term != rhs.term ? lhs.term < rhs.term : lhs.index < rhs.index
  }

  public var description: String { "\(index)@\(term)" }
}

/// One entry of the replicated log.
public struct LogEntry: Hashable, Sendable {
  public enum Kind: UInt8, Sendable {
    /// Opaque bytes for the application's state machine.
    case command = 0
    /// Appended by every new leader so that it can commit an entry of its own term (Raft §5.4.2)
    /// and so that membership changes wait until the previous leader's changes are settled.
    case noop = 1
    /// `data` holds a whole encoded `Configuration`; it takes effect as soon as it is appended.
    case configuration = 2
  }

  public var index: UInt64
  public var term: UInt64
  public var kind: Kind
  public var data: [UInt8]

  public init(index: UInt64, term: UInt64, kind: Kind = .command, data: [UInt8] = []) {
    self.index = index
    self.term = term
    self.kind = kind
    self.data = data
  }

  public var position: LogPosition { LogPosition(index: index, term: term) }

  /// What this entry costs against byte-denominated limits (message size, in-flight window).
  /// The constant approximates the framing overhead so that empty entries are not free.
  @inlinable public var sizeInBytes: Int { data.count + 24 }
}
