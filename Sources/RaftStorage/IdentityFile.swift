import Raft

/// Who a data directory belongs to: the node's name (for people), its member id (the core's
/// `NodeID`, in every configuration that names it) and its cluster's id. Chosen once, when the node
/// bootstraps a cluster or before it asks one to add it, and never changed afterwards: a log and a
/// vote belong to one member of one cluster.
public struct NodeIdentity: Sendable, Equatable, CustomStringConvertible {
  public var name: String
  public var memberID: NodeID
  /// 0 while unknown: a directory written before cluster ids existed, or a node that joined a
  /// cluster that has none. A node that knows no cluster id checks nobody's, and nobody checks it.
  public var clusterID: UInt64

  public init(name: String, memberID: NodeID, clusterID: UInt64) {
    self.name = name
    self.memberID = memberID
    self.clusterID = clusterID
  }

  public var description: String {
    "\(name) (member \(memberID.hex), cluster \(clusterID == 0 ? "unknown" : HexID.format(clusterID)))"
  }
}

/// The `identity` file: one checksummed record, replaced whole (written under a temporary name,
/// fsynced, renamed over the old one, and the directory fsynced), so that a crash leaves either the
/// old record or the new one.
///
/// Layout (big-endian): magic "RDBI" (4), version (2), name length (2), member id (8), cluster id
/// (8, 0 = unknown), the name in UTF-8, CRC-32C of everything before it (4).
enum IdentityFile {
  static let magic: UInt32 = 0x5244_4249
  static let version: UInt16 = 1
  static let headerLength = 24
  static let maxNameBytes = 1024

  static func encode(_ identity: NodeIdentity) -> [UInt8] {
    let name = Array(identity.name.utf8)
    precondition(!name.isEmpty && name.count <= maxNameBytes, "identity name of \(name.count) bytes")
    var bytes = [UInt8](repeating: 0, count: headerLength + name.count + 4)
    bytes.withUnsafeMutableBytes { record in
      record.storeBigEndian(magic, at: 0)
      record.storeBigEndian(version, at: 4)
      record.storeBigEndian(UInt16(name.count), at: 6)
      record.storeBigEndian(identity.memberID.rawValue, at: 8)
      record.storeBigEndian(identity.clusterID, at: 16)
      record.baseAddress!.advanced(by: headerLength).copyMemory(from: name, byteCount: name.count)
      let end = headerLength + name.count
      record.storeBigEndian(CRC32C.checksum(UnsafeRawBufferPointer(rebasing: record[0..<end])), at: end)
    }
    return bytes
  }

  /// Decodes a whole file, naming the offset of whatever is wrong.
  static func decode(_ bytes: [UInt8], path: String) throws(StorageError) -> NodeIdentity {
    func damaged(_ offset: Int, _ reason: String) -> StorageError {
      .corruption(
        file: path, offset: Int64(offset), reason: reason + "; " + IdentityFile.recoveryAdvice)
    }
    guard bytes.count >= headerLength + 4 else {
      throw damaged(bytes.count, "the identity record ends after \(bytes.count) bytes, inside its header")
    }
    let result: Result<NodeIdentity, StorageError> = bytes.withUnsafeBytes { record in
      guard record.loadBigEndian(at: 0, as: UInt32.self) == magic else {
        return .failure(damaged(0, "bad magic (not an identity record)"))
      }
      let nameLength = Int(record.loadBigEndian(at: 6, as: UInt16.self))
      let end = headerLength + nameLength
      guard end + 4 == bytes.count else {
        return .failure(
          damaged(6, "a name of \(nameLength) bytes does not fit a record of \(bytes.count) bytes"))
      }
      guard
        CRC32C.checksum(UnsafeRawBufferPointer(rebasing: record[0..<end]))
          == record.loadBigEndian(at: end, as: UInt32.self)
      else { return .failure(damaged(end, "checksum mismatch")) }
      let found = record.loadBigEndian(at: 4, as: UInt16.self)
      guard found == version else {
        return .failure(
          .unsupportedFormat(path: path, found: "identity version \(found)", supported: Int(version)))
      }
      let member = record.loadBigEndian(at: 8, as: UInt64.self)
      guard member != 0 else { return .failure(damaged(8, "member id 0")) }
      guard nameLength > 0, nameLength <= maxNameBytes,
        let name = String(validating: record[headerLength..<end], as: UTF8.self)
      else { return .failure(damaged(headerLength, "the name is empty, too long or not UTF-8")) }
      return .success(
        NodeIdentity(
          name: name, memberID: NodeID(member), clusterID: record.loadBigEndian(at: 16, as: UInt64.self)))
    }
    return try result.get()
  }

  static let recoveryAdvice =
    "the node cannot know which member it is. If you know its name, member id and cluster id "
    + "(GET /status on another member lists them), restore the file from a backup; otherwise remove "
    + "the member (POST /remove), move the data directory aside and join the node again"
}

extension FileStorage {
  /// The directory's identity, or nil if it has none yet (a new directory, or one written before
  /// identities existed: see `legacyOwner`).
  public func readIdentity() throws(StorageError) -> NodeIdentity? {
    guard fs.fileExists(layout.identity) else { return nil }
    let file = try fs.open(layout.identity, mode: .readOnly)
    defer { file.close() }
    return try IdentityFile.decode(try file.readAll(), path: layout.identity)
  }

  /// Replaces the identity durably: when this returns, a crash leaves the new one.
  public func writeIdentity(_ identity: NodeIdentity) throws(StorageError) {
    let temporary = try fs.open(layout.identityTemporary, mode: .createOrTruncate)
    do {
      try temporary.writeAll(IdentityFile.encode(identity), at: 0)
      try temporary.sync()
      temporary.close()
    } catch {
      temporary.close()
      throw error
    }
    try fs.rename(layout.identityTemporary, to: layout.identity)
    try fs.syncDirectory(layout.root)
  }

  /// The name in the `node-name` file that builds before identities wrote (their member id was a
  /// hash of that name, and they had no cluster id), or nil.
  public func legacyOwner() throws(StorageError) -> String? {
    guard fs.fileExists(layout.legacyNodeName) else { return nil }
    let file = try fs.open(layout.legacyNodeName, mode: .readOnly)
    defer { file.close() }
    let name = String(decoding: try file.read(count: IdentityFile.maxNameBytes + 2, at: 0), as: UTF8.self)
    return name.trimmingWhitespace()
  }
}
