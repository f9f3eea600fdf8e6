import KVStore
import RaftStorage

/// What `raftdb --version` and `raftctl --version` print: which build this is, and the two
/// versions that decide what it can run with — the newest cluster version it supports (members
/// agree one through the log, docs/API.md) and the data format it writes (`FORMAT`, docs/STORAGE.md).
public enum BuildVersion {
  /// The release this build is. There are no releases yet, so every build says it is a development
  /// build; the two numbers below are what an operator needs for upgrades.
  public static let release = "development build"
  public static var clusterVersion: UInt32 { ClusterVersion.latest }
  public static var dataFormat: Int { DataFormat.version }

  /// "raftdb development build (cluster version 2, data format 1)", for the executable `name`.
  public static func description(of name: String) -> String {
    "\(name) \(release) (cluster version \(clusterVersion), data format \(dataFormat))"
  }
}
