import Foundation
import Raft
@_spi(Testing) import RaftStorage

/// A file system that remembers what has been made durable, so a test can pull the plug: `powerLoss`
/// rewrites the directories as a crash may leave them. Each file keeps what its last fsync covered,
/// plus any mix of what was written since (see `surviving`); each directory entry created, renamed or
/// removed since the last directory fsync independently may or may not have reached the disk. That is
/// the worst case storage's sync discipline must be correct against.
final class PowerLossFileSystem: StorageFileSystem {
  private let base = POSIXFileSystem()
  private var nextInode = 0
  /// The file each path currently names.
  private var inodes: [String: Int] = [:]
  /// Content as of each file's last fsync (absent: never synced, so empty after a crash).
  private var durableContent: [Int: [UInt8]] = [:]
  /// Entries of each directory as of its last fsync.
  private var durableEntries: [String: [String: Int]] = [:]
  private var directories: Set<String> = []
  /// The process "dies" after this many more mutating calls: that call and every later one fails,
  /// so a power loss can be placed in the middle of any storage operation.
  var callsUntilHalt: Int?

  /// Counts a mutating call; throws once the process is dead.
  func proceed(_ path: String) throws(StorageError) {
    guard let left = callsUntilHalt else { return }
    guard left > 0 else { throw .io(operation: "halted (simulated process death)", path: path, errno: 5) }
    callsUntilHalt = left - 1
  }

  private func parent(_ path: String) -> String {
    String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
  }

  private func newInode() -> Int {
    nextInode += 1
    return nextInode
  }

  /// A file that existed before tracking began counts as durable, with its directory entry.
  private func adopt(_ path: String) -> Int {
    let inode = newInode()
    inodes[path] = inode
    durableContent[inode] = Disk.read(path)
    durableEntries[parent(path), default: [:]][String(path.split(separator: "/").last!)] = inode
    directories.insert(parent(path))
    return inode
  }

  func open(_ path: String, mode: FileOpenMode) throws(StorageError) -> any StorageFile {
    if mode != .readOnly && mode != .readWrite { try proceed(path) }
    let existed = base.fileExists(path)
    let file = try base.open(path, mode: mode)
    let inode: Int
    if !existed {
      inode = newInode()
      inodes[path] = inode
      directories.insert(parent(path))
    } else {
      inode = inodes[path] ?? adopt(path)
    }
    return PowerLossFile(base: file, inode: inode, fileSystem: self)
  }

  func synced(_ inode: Int, path: String) {
    durableContent[inode] = Disk.read(path)
  }

  func fileExists(_ path: String) -> Bool { base.fileExists(path) }

  func isDirectory(_ path: String) -> Bool { base.isDirectory(path) }

  func rename(_ from: String, to: String) throws(StorageError) {
    try proceed(from)
    let inode = inodes[from] ?? adopt(from)
    if inodes[to] == nil && base.fileExists(to) { _ = adopt(to) }
    try base.rename(from, to: to)
    inodes[from] = nil
    inodes[to] = inode
    directories.insert(parent(to))
  }

  func remove(_ path: String) throws(StorageError) {
    try proceed(path)
    if inodes[path] == nil { _ = adopt(path) }
    try base.remove(path)
    inodes[path] = nil
  }

  func listDirectory(_ path: String) throws(StorageError) -> [String] { try base.listDirectory(path) }

  func createDirectory(_ path: String) throws(StorageError) { try base.createDirectory(path) }

  func syncDirectory(_ path: String) throws(StorageError) {
    try proceed(path)
    try base.syncDirectory(path)
    var entries: [String: Int] = [:]
    for (file, inode) in inodes where parent(file) == path {
      entries[String(file.split(separator: "/").last!)] = inode
    }
    durableEntries[path] = entries
  }

  /// Rewrites every tracked directory as a power failure might leave it. All files of the storage
  /// must be closed first. Afterwards everything on disk counts as durable.
  func powerLoss(_ random: inout SplitMix64) {
    // Sorted: Set and Dictionary order differs between processes, and the random draws below must
    // happen in the same order for a seed to reproduce.
    for directory in directories.sorted() {
      let current = Dictionary(
        uniqueKeysWithValues: inodes.filter { parent($0.key) == directory }.map {
          (String($0.key.split(separator: "/").last!), $0.value)
        })
      let durable = durableEntries[directory] ?? [:]
      var survivors: [String: [UInt8]] = [:]
      for name in Set(current.keys).union(durable.keys).sorted() {
        let inode = current[name] == durable[name] || random.next() % 2 == 0 ? current[name] : durable[name]
        guard let inode else { continue }
        let synced = durableContent[inode] ?? []
        let path = directory + "/" + name
        // What was written since the last fsync, if the file is still reachable to read it.
        let written = inodes[path] == inode ? Disk.read(path) : synced
        survivors[name] = Self.surviving(synced: synced, written: written, &random)
      }
      for (path, _) in inodes where parent(path) == directory {
        try? FileManager.default.removeItem(atPath: path)
      }
      for (name, content) in survivors { Disk.write(directory + "/" + name, content) }
    }
    inodes = [:]
    durableContent = [:]
    durableEntries = [:]
    directories = []
  }
}

extension PowerLossFileSystem {
  /// What of a file's unsynced changes a crash keeps: nothing, everything, or a mix in which each
  /// 512-byte block of the old data is old or new independently (writeback order is arbitrary), the
  /// length is the old or the new one, and data appended after the old data survives as a prefix
  /// (an append reaches the disk in order; a zero gap followed by records is what recovery reports as
  /// corruption, so it must not come from a crash).
  static func surviving(synced: [UInt8], written: [UInt8], _ random: inout SplitMix64) -> [UInt8] {
    switch random.next() % 4 {
    case 0: return synced
    case 1: return written
    default:
      let length = random.next() % 2 == 0 ? synced.count : written.count
      let dataEnd = (synced.lastIndex { $0 != 0 } ?? -1) + 1
      let appendCut = dataEnd + Int(random.next() % UInt64(max(written.count - dataEnd, 0) + 1))
      var result = [UInt8](repeating: 0, count: length)
      for block in stride(from: 0, to: length, by: 512) {
        let newBlock = random.next() % 2 == 0
        for k in block..<min(block + 512, length) {
          let old = k < synced.count ? synced[k] : 0
          let new = k < written.count ? written[k] : 0
          result[k] = k < dataEnd ? (newBlock ? new : old) : (k < appendCut ? new : old)
        }
      }
      return result
    }
  }
}

final class PowerLossFile: StorageFile {
  private let base: any StorageFile
  private let inode: Int
  private let fileSystem: PowerLossFileSystem

  init(base: any StorageFile, inode: Int, fileSystem: PowerLossFileSystem) {
    self.base = base
    self.inode = inode
    self.fileSystem = fileSystem
  }

  var path: String { base.path }

  func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(StorageError) -> Int {
    try base.read(into: buffer, at: offset)
  }

  func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(StorageError) -> Int {
    try fileSystem.proceed(path)
    return try base.write(bytes, at: offset)
  }

  func dataSync() throws(StorageError) {
    try fileSystem.proceed(path)
    try base.dataSync()
    fileSystem.synced(inode, path: path)
  }

  func sync() throws(StorageError) {
    try fileSystem.proceed(path)
    try base.sync()
    fileSystem.synced(inode, path: path)
  }

  func truncate(to size: Int64) throws(StorageError) {
    try fileSystem.proceed(path)
    try base.truncate(to: size)
  }

  func allocate(size: Int64) throws(StorageError) -> Bool {
    try fileSystem.proceed(path)
    return try base.allocate(size: size)
  }

  func size() throws(StorageError) -> Int64 { try base.size() }

  func lockExclusive() throws(StorageError) { try base.lockExclusive() }

  func close() { base.close() }
}
