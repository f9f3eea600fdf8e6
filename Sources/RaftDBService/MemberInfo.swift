import Raft

/// Who a member is, as operators name it: the course's `-id node01`, its raft address and its HTTP
/// address. Stored in the member's `context` in every configuration entry, so it is replicated,
/// snapshotted and rolled back with the membership itself.
public struct MemberInfo: Sendable, Hashable, Codable {
  public var name: String
  public var raftAddress: String
  public var httpAddress: String

  /// The longest name or address a configuration entry's context holds: a longer one would not
  /// decode, so a join refuses it.
  public static let maxFieldBytes = 1024

  public init(name: String, raftAddress: String, httpAddress: String) {
    self.name = name
    self.raftAddress = raftAddress
    self.httpAddress = httpAddress
  }

  /// The member id that builds before random member ids derived from a name: a 64-bit FNV-1a
  /// hash (never zero). It is still the id of a data directory those builds wrote, and of a `/join`
  /// that names no `member_id` (what such a build sends). Two clusters that use the same names
  /// have the same legacy ids, which is why new members get random ones (docs/SECURITY.md).
  public static func legacyNodeID(forName name: String) -> NodeID {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in name.utf8 {
      hash ^= UInt64(byte)
      hash &*= 0x0000_0100_0000_01B3
    }
    return NodeID(hash == 0 ? 1 : hash)
  }

  public func encoded() -> [UInt8] {
    var writer = ByteWriter(capacity: 64)
    writer.write(UInt8(1))
    writer.writeLengthPrefixed(Array(name.utf8))
    writer.writeLengthPrefixed(Array(raftAddress.utf8))
    writer.writeLengthPrefixed(Array(httpAddress.utf8))
    return writer.bytes
  }

  public init?(decoding context: [UInt8]) {
    var reader = ByteReader(context)
    guard (try? reader.readUInt8()) == 1,
      let name = try? reader.readLengthPrefixed(limit: Self.maxFieldBytes),
      let raft = try? reader.readLengthPrefixed(limit: Self.maxFieldBytes),
      let http = try? reader.readLengthPrefixed(limit: Self.maxFieldBytes),
      reader.isAtEnd
    else { return nil }
    self.init(
      name: String(decoding: name, as: UTF8.self), raftAddress: String(decoding: raft, as: UTF8.self),
      httpAddress: String(decoding: http, as: UTF8.self))
  }
}

extension Configuration {
  /// Members with the identities in their contexts (members without one show their numeric id).
  public var memberInfos: [(member: Member, info: MemberInfo)] {
    members.map { member in
      (
        member,
        MemberInfo(decoding: member.context)
          ?? MemberInfo(name: member.id.hex, raftAddress: "", httpAddress: "")
      )
    }
  }

  public func info(of id: NodeID) -> MemberInfo? {
    member(id).flatMap { MemberInfo(decoding: $0.context) }
  }
}

extension Configuration {
  /// The member a join of `info` under `memberID` resumes, or nil if it adds a new one; throws
  /// when the join conflicts: the id belongs to a member of another name, the name to a member of
  /// another id (a node that lost its data directory gets a new id and must be removed first: its
  /// old id may have voted), or the member exists with other addresses.
  public func memberResumedByJoin(of info: MemberInfo, as memberID: NodeID) throws(ServiceError) -> Member? {
    for (member, known) in memberInfos {
      if member.id == memberID {
        guard known.name == info.name else {
          throw .conflict(
            "member id \(memberID.hex) already belongs to member \(known.name), not \(info.name); a joining node chooses a new random id when it starts with an empty data directory"
          )
        }
        guard known == info else {
          throw .conflict(
            "\(info.name) is already a member at raft \(known.raftAddress), http \(known.httpAddress); remove it first"
          )
        }
        return member
      }
      if known.name == info.name {
        throw .conflict(
          "the name \(info.name) is taken by member \(member.id.hex), not \(memberID.hex) (a node whose data directory was replaced is a new member); remove it first (POST /remove) or choose another name"
        )
      }
    }
    return nil
  }
}
