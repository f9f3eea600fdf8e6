import Raft

/// Who a member is, as operators name it: the course's `-id node01`, its raft address and its HTTP
/// address. Stored in the member's `context` in every configuration entry, so it is replicated,
/// snapshotted and rolled back with the membership itself.
public struct MemberInfo: Sendable, Hashable, Codable {
  public var name: String
  public var raftAddress: String
  public var httpAddress: String

  public init(name: String, raftAddress: String, httpAddress: String) {
    self.name = name
    self.raftAddress = raftAddress
    self.httpAddress = httpAddress
  }

  /// The core's numeric identity for a name: a stable 64-bit FNV-1a hash (never zero). Joins refuse a
  /// name whose id collides with a different member's.
  public static func nodeID(forName name: String) -> NodeID {
    var hash: UInt64 = 0xCBF2_9CE4_8422_2325
    for byte in name.utf8 {
      hash ^= UInt64(byte)
      hash &*= 0x0000_0100_0000_01B3
    }
    return NodeID(hash == 0 ? 1 : hash)
  }

  public var nodeID: NodeID { Self.nodeID(forName: name) }

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
      let name = try? reader.readLengthPrefixed(limit: 1024),
      let raft = try? reader.readLengthPrefixed(limit: 1024),
      let http = try? reader.readLengthPrefixed(limit: 1024),
      reader.isAtEnd
    else { return nil }
    self.init(
      name: String(decoding: name, as: UTF8.self), raftAddress: String(decoding: raft, as: UTF8.self),
      httpAddress: String(decoding: http, as: UTF8.self))
  }
}

extension Configuration {
  /// Members with the identities in their contexts (members without one show their numeric id).
  var memberInfos: [(member: Member, info: MemberInfo)] {
    members.map { member in
      (
        member,
        MemberInfo(decoding: member.context)
          ?? MemberInfo(name: "\(member.id)", raftAddress: "", httpAddress: "")
      )
    }
  }

  func info(of id: NodeID) -> MemberInfo? {
    member(id).flatMap { MemberInfo(decoding: $0.context) }
  }
}
