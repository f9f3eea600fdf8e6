import Logging

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The `FORMAT` marker: written last when a directory is initialized, so its presence means the
/// directory is complete, and checked first when one is opened, so that an older build refuses a
/// directory written by a newer one instead of misreading it.
public enum DataFormat {
  /// The data format this build writes (and the newest it reads); `--version` prints it.
  public static let version = 1
  static let markerPrefix = "raftdb-data-format "
  static var marker: String { markerPrefix + String(version) + "\n" }

  /// Creates or checks the data directory and takes its lock. Returns the lock file, which must stay
  /// open for as long as the directory is in use.
  static func open(
    _ layout: DataLayout, fileSystem fs: any StorageFileSystem, logger: Logger
  ) throws(StorageError) -> any StorageFile {
    if !fs.isDirectory(layout.root) {
      try createDirectories(layout.root, fileSystem: fs)
    }
    let lock = try fs.open(layout.lock, mode: fs.fileExists(layout.lock) ? .readWrite : .createOrTruncate)
    do {
      try takeLock(lock)
    } catch {
      lock.close()
      throw .io(
        operation: "lock (is another raftdb process using this directory?)", path: layout.lock,
        errno: errnoOf(error))
    }
    do {
      if fs.fileExists(layout.format) {
        try check(layout, fileSystem: fs)
      } else {
        try initialize(layout, fileSystem: fs, logger: logger)
      }
    } catch {
      lock.close()
      throw error
    }
    return lock
  }

  /// A freshly forked child holds copies of all of its parent's descriptors until it calls exec
  /// (close-on-exec ones included), and with them the flock of a directory the parent opened a
  /// moment ago; so a refused lock is retried for a while before it counts as "in use".
  private static func takeLock(_ lock: any StorageFile) throws(StorageError) {
    var attempts = 0
    while true {
      do {
        try lock.lockExclusive()
        return
      } catch {
        attempts += 1
        guard attempts < 100, case .io(_, _, let code) = error, code == EWOULDBLOCK else { throw error }
        usleep(20_000)
      }
    }
  }

  private static func errnoOf(_ error: StorageError) -> Int32 {
    if case .io(_, _, let code) = error { return code }
    return 0
  }

  private static func check(_ layout: DataLayout, fileSystem fs: any StorageFileSystem) throws(StorageError) {
    let file = try fs.open(layout.format, mode: .readOnly)
    defer { file.close() }
    let bytes = try file.read(count: 256, at: 0)
    let text = String(decoding: bytes, as: UTF8.self)
    let trimmed = text.trimmingWhitespace()
    guard trimmed.hasPrefix(markerPrefix), let found = Int(trimmed.dropFirst(markerPrefix.count)),
      found == version
    else {
      throw .unsupportedFormat(
        path: layout.root, found: trimmed.isEmpty ? "(empty FORMAT file)" : trimmed,
        supported: version)
    }
    for directory in [layout.wal, layout.snapshots] where !fs.isDirectory(directory) {
      throw .unrecoverable(
        path: directory, reason: "the directory is missing from an initialized data directory")
    }
    guard fs.fileExists(layout.hardState) else {
      throw .unrecoverable(
        path: layout.hardState,
        reason: "the hard state file is missing from an initialized data directory (FORMAT exists); "
          + "the node's term and vote are lost. " + HardStateFile.recoveryAdvice)
    }
  }

  /// Lays out an empty directory. Every step is idempotent, and FORMAT is renamed into place last,
  /// so a crash part way leaves a directory that is simply initialized again.
  private static func initialize(
    _ layout: DataLayout, fileSystem fs: any StorageFileSystem, logger: Logger
  ) throws(StorageError) {
    let expected: Set<String> = ["LOCK", "FORMAT.tmp", "hardstate", "wal", "snapshots"]
    let present = try fs.listDirectory(layout.root)
    let unexpected = present.filter { !expected.contains($0) }
    var nonEmpty: [String] = []
    for directory in [layout.wal, layout.snapshots] where fs.isDirectory(directory) {
      if !(try fs.listDirectory(directory)).isEmpty { nonEmpty.append(directory) }
    }
    guard unexpected.isEmpty, nonEmpty.isEmpty else {
      throw .unrecoverable(
        path: layout.root,
        reason: "not a raftdb data directory: it has no FORMAT file but contains "
          + (unexpected.sorted() + nonEmpty).joined(separator: ", "))
    }
    logger.info("initializing data directory", metadata: ["path": "\(layout.root)"])
    try fs.createDirectory(layout.wal)
    try fs.createDirectory(layout.snapshots)
    try HardStateFile.initialize(path: layout.hardState, fileSystem: fs)
    let temporary = try fs.open(layout.formatTemporary, mode: .createOrTruncate)
    defer { temporary.close() }
    try temporary.writeAll(Array(marker.utf8), at: 0)
    try temporary.sync()
    try fs.syncDirectory(layout.wal)
    try fs.syncDirectory(layout.snapshots)
    // The entries of hardstate, wal and snapshots must be durable before FORMAT can be: a directory
    // with FORMAT and without a hard state is refused.
    try fs.syncDirectory(layout.root)
    try fs.rename(layout.formatTemporary, to: layout.format)
    try fs.syncDirectory(layout.root)
  }

  /// `mkdir -p`, making each new directory's entry durable in its parent.
  private static func createDirectories(_ path: String, fileSystem fs: any StorageFileSystem)
    throws(StorageError)
  {
    var missing: [String] = []
    var current = path
    while !current.isEmpty, current != "/", !fs.isDirectory(current) {
      missing.append(current)
      current = parent(of: current)
    }
    for directory in missing.reversed() {
      try fs.createDirectory(directory)
      try fs.syncDirectory(parent(of: directory))
    }
  }

  static func parent(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
  }
}

extension String {
  func trimmingWhitespace() -> String {
    let scalars = unicodeScalars
    guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
      let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
    else { return "" }
    return String(scalars[first...last])
  }
}
