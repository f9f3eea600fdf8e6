/// One server in a configuration.
public struct Member: Hashable, Sendable, CustomStringConvertible {
  public var id: NodeID
  /// Voters count toward elections and commitment; learners only receive the log.
  public var isVoter: Bool
  /// Opaque to the core; the server layer keeps the member's name and addresses here so that they
  /// are replicated, snapshotted and rolled back together with the membership itself.
  public var context: [UInt8]

  public init(id: NodeID, isVoter: Bool, context: [UInt8] = []) {
    self.id = id
    self.isVoter = isVoter
    self.context = context
  }

  public var description: String { isVoter ? "\(id)" : "\(id)(learner)" }
}

/// The set of servers in a Raft group (lesson 09: "the configuration").
///
/// Every configuration entry in the log holds a whole `Configuration`, not a delta: a node that starts
/// from an empty log, or rolls back a conflicting suffix, recovers the right membership by reading
/// the newest configuration entry it has, with no replay.
public struct Configuration: Hashable, Sendable, CustomStringConvertible {
  /// Sorted by id, no duplicates.
  public private(set) var members: [Member]

  public init(members: [Member]) {
    let sorted = members.sorted { $0.id < $1.id }
    for i in sorted.indices.dropFirst() {
      precondition(sorted[i - 1].id != sorted[i].id, "duplicate member \(sorted[i].id)")
    }
    self.members = sorted
  }

  /// A configuration of voters without context, for tests and bootstrapping.
  public init(voters: [NodeID], learners: [NodeID] = []) {
    self.init(
      members: voters.map { Member(id: $0, isVoter: true) } + learners.map { Member(id: $0, isVoter: false) })
  }

  public static let empty = Configuration(members: [])

  public var voters: [NodeID] { members.lazy.filter(\.isVoter).map(\.id) }

  public var learners: [NodeID] { members.lazy.filter { !$0.isVoter }.map(\.id) }

  public var voterCount: Int { members.reduce(0) { $0 + ($1.isVoter ? 1 : 0) } }

  /// Votes (or acknowledgements) needed for a decision: a strict majority of voters.
  public var quorum: Int { voterCount / 2 + 1 }

  public func member(_ id: NodeID) -> Member? {
    members.first { $0.id == id }
  }

  public func contains(_ id: NodeID) -> Bool { member(id) != nil }

  public func isVoter(_ id: NodeID) -> Bool { member(id)?.isVoter ?? false }

  /// The configuration that results from one single-server change (lesson 09), or why the change
  /// is not allowed from this configuration.
  public func applying(_ change: ConfigurationChange) throws(ConfigurationChangeError) -> Configuration {
    guard change.context.count <= Self.contextSizeLimit else {
      throw .contextTooLarge(bytes: change.context.count, limit: Self.contextSizeLimit)
    }
    var members = self.members
    let position = members.firstIndex { $0.id == change.node }
    switch change.kind {
    case .addVoter:
      if let position {
        guard !members[position].isVoter else { throw .alreadyVoter(change.node) }
        // Adding a learner as a voter promotes it, as hashicorp/raft's AddVoter does.
        members[position].isVoter = true
        if !change.context.isEmpty { members[position].context = change.context }
      } else {
        guard members.count < Self.maxMembers else { throw .tooManyMembers(limit: Self.maxMembers) }
        members.append(Member(id: change.node, isVoter: true, context: change.context))
      }
    case .addLearner:
      guard position == nil else { throw .alreadyMember(change.node) }
      guard members.count < Self.maxMembers else { throw .tooManyMembers(limit: Self.maxMembers) }
      members.append(Member(id: change.node, isVoter: false, context: change.context))
    case .promoteLearner:
      guard let position else { throw .notAMember(change.node) }
      guard !members[position].isVoter else { throw .notALearner(change.node) }
      members[position].isVoter = true
    case .removeMember:
      guard let position else { throw .notAMember(change.node) }
      if members[position].isVoter && voterCount == 1 { throw .removesLastVoter(change.node) }
      members.remove(at: position)
    }
    return Configuration(members: members)
  }

  public var description: String {
    "[" + members.map(\.description).joined(separator: " ") + "]"
  }
}

/// A single-server membership change, as proposed to the leader.
public struct ConfigurationChange: Hashable, Sendable, CustomStringConvertible {
  public enum Kind: UInt8, Sendable {
    case addVoter = 1
    case addLearner = 2
    case promoteLearner = 3
    case removeMember = 4
  }

  public var kind: Kind
  public var node: NodeID
  public var context: [UInt8]

  public init(_ kind: Kind, _ node: NodeID, context: [UInt8] = []) {
    self.kind = kind
    self.node = node
    self.context = context
  }

  public var description: String { "\(kind)(\(node))" }
}

public enum ConfigurationChangeError: Error, Hashable, Sendable, CustomStringConvertible {
  case alreadyVoter(NodeID)
  case alreadyMember(NodeID)
  case notALearner(NodeID)
  case notAMember(NodeID)
  case removesLastVoter(NodeID)
  case tooManyMembers(limit: Int)
  case contextTooLarge(bytes: Int, limit: Int)

  public var description: String { description(naming: \.description) }

  /// The description with each node named by `name` (the server uses members' names).
  public func description(naming name: (NodeID) -> String) -> String {
    switch self {
    case .alreadyVoter(let id): "\(name(id)) is already a voter"
    case .alreadyMember(let id): "\(name(id)) is already a member"
    case .notALearner(let id): "\(name(id)) is not a learner"
    case .notAMember(let id): "\(name(id)) is not a member"
    case .removesLastVoter(let id): "removing \(name(id)) would leave no voters"
    case .tooManyMembers(let limit):
      "the cluster already has the maximum of \(limit) members (voters and learners)"
    case .contextTooLarge(let bytes, let limit):
      "member details of \(bytes) bytes exceed the \(limit)-byte limit"
    }
  }
}

// MARK: - Encoding

extension Configuration {
  static let encodingVersion: UInt8 = 1
  /// The most members (voters and learners together) a configuration may have: every membership
  /// change is checked against it before it is proposed (`applying`). etcd recommends at most seven
  /// voters and allows one learner by default; this bound leaves room for large learner fleets while
  /// keeping a configuration entry small (each member costs every heartbeat round and every
  /// progress table row).
  public static let maxMembers = 128
  /// What the encoder writes and the decoder accepts (a format bound, above `maxMembers` so that
  /// whatever `applying` lets through is always decodable, and data written before `maxMembers`
  /// existed still loads). A corrupt length cannot make a decoder allocate more.
  public static let memberCountLimit = 1024
  public static let contextSizeLimit = 64 * 1024

  public func encoded() -> [UInt8] {
    var writer = ByteWriter(capacity: 8 + members.count * 32)
    encode(into: &writer)
    return writer.bytes
  }

  public func encode(into writer: inout ByteWriter) {
    // `applying` keeps every configuration within what `init(from:)` accepts.
    precondition(members.count <= Self.memberCountLimit, "\(members.count) members exceed the encoding bound")
    writer.write(Self.encodingVersion)
    writer.write(UInt32(members.count))
    for member in members {
      writer.write(member.id.rawValue)
      writer.write(member.isVoter)
      writer.writeLengthPrefixed(member.context)
    }
  }

  public init(decoding bytes: [UInt8]) throws(ByteReader.Failure) {
    var reader = ByteReader(bytes)
    try self.init(from: &reader)
    guard reader.isAtEnd else {
      throw .invalidValue("\(reader.remaining) trailing bytes after configuration")
    }
  }

  public init(from reader: inout ByteReader) throws(ByteReader.Failure) {
    let version = try reader.readUInt8()
    guard version == Self.encodingVersion else { throw .invalidValue("configuration version \(version)") }
    let count = Int(try reader.readUInt32())
    guard count <= Self.memberCountLimit else { throw .lengthTooLarge(count, limit: Self.memberCountLimit) }
    var members: [Member] = []
    members.reserveCapacity(count)
    for _ in 0..<count {
      let raw = try reader.readUInt64()
      guard raw != 0 else { throw .invalidValue("member id 0") }
      let isVoter = try reader.readBool()
      let context = try reader.readLengthPrefixed(limit: Self.contextSizeLimit)
      members.append(Member(id: NodeID(raw), isVoter: isVoter, context: context))
    }
    let ids = members.map(\.id)
    guard Set(ids).count == ids.count else { throw .invalidValue("duplicate member ids") }
    self.init(members: members)
  }
}
