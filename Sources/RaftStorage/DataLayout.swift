/// Where each file lives in a data directory:
///
///     DATA/FORMAT                                   format marker ("raftdb-data-format 1")
///     DATA/LOCK                                     flock()ed while a process has the directory open
///     DATA/hardstate                                two checksummed hard state slots
///     DATA/identity                                 name, member id and cluster id, checksummed
///     DATA/node-name                                the name alone (written by builds before identity)
///     DATA/wal/<first index, 20 digits>.wal          WAL segments
///     DATA/snapshots/<index>-<term>.snap            snapshots (20 digits each)
///
/// Indexes are zero-padded to 20 digits (the width of UInt64.max) so that names sort in index order
/// in any listing an operator looks at.
@_spi(Testing) public struct DataLayout: Sendable {
  public let root: String

  public init(root: String) { self.root = root }

  var format: String { root + "/FORMAT" }
  var formatTemporary: String { root + "/FORMAT.tmp" }
  var lock: String { root + "/LOCK" }
  var hardState: String { root + "/hardstate" }
  var identity: String { root + "/identity" }
  var identityTemporary: String { root + "/identity.tmp" }
  var legacyNodeName: String { root + "/node-name" }
  var wal: String { root + "/wal" }
  var snapshots: String { root + "/snapshots" }

  static let segmentSuffix = ".wal"
  static let snapshotSuffix = ".snap"
  /// Marks files that are incomplete by construction; recovery deletes them.
  static let temporaryMarker = ".tmp"
  /// Appended to a snapshot that failed its checksum, so that it is neither used nor counted again,
  /// but stays available for inspection.
  static let corruptSuffix = ".corrupt"

  func segment(firstIndex: UInt64) -> String { Self.segmentPath(in: wal, firstIndex: firstIndex) }

  static func segmentPath(in directory: String, firstIndex: UInt64) -> String {
    directory + "/" + padded(firstIndex) + segmentSuffix
  }

  public func snapshot(index: UInt64, term: UInt64) -> String {
    snapshots + "/" + Self.padded(index) + "-" + Self.padded(term) + Self.snapshotSuffix
  }

  public static func padded(_ value: UInt64) -> String {
    let digits = String(value)
    return String(repeating: "0", count: max(0, 20 - digits.count)) + digits
  }

  /// The first index a segment file name stands for, or nil if the name is not a segment's.
  static func parseSegmentName(_ name: String) -> UInt64? {
    guard name.hasSuffix(segmentSuffix) else { return nil }
    let stem = name.dropLast(segmentSuffix.count)
    guard stem.count == 20, stem.allSatisfy(\.isASCIIDigit) else { return nil }
    return UInt64(stem)
  }

  static func parseSnapshotName(_ name: String) -> (index: UInt64, term: UInt64)? {
    guard name.hasSuffix(snapshotSuffix) else { return nil }
    let parts = name.dropLast(snapshotSuffix.count).split(separator: "-", omittingEmptySubsequences: false)
    guard parts.count == 2, parts.allSatisfy({ $0.count == 20 && $0.allSatisfy(\.isASCIIDigit) }),
      let index = UInt64(parts[0]), let term = UInt64(parts[1])
    else { return nil }
    return (index, term)
  }
}

extension Character {
  var isASCIIDigit: Bool { isASCII && isNumber }
}
