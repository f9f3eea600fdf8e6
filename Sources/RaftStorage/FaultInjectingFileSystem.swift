import Synchronization

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Wraps a file system and makes chosen calls fail, for tests of what storage does when the disk
/// misbehaves: the Nth write or sync failing with a chosen errno, short writes, a full disk.
///
/// Failures happen before the call reaches the wrapped file system, so a failed write wrote nothing
/// and a failed sync synced nothing (what the page cache then holds is what a real failure can leave).
/// It can also make every sync slow (`syncDelay`), for tests that nothing else waits on an fsync.
/// Thread-safe: a server's writer thread, snapshot threads and node loop use one instance at once.
public final class FaultInjectingFileSystem: StorageFileSystem {
  public enum Operation: String, Hashable, Sendable, CaseIterable {
    /// `pwrite`.
    case write
    /// `fdatasync`, `fsync` and directory `fsync`.
    case sync
    case truncate
    case allocate
    case rename
    case remove
    /// Opening with `.createNew` or `.createOrTruncate`.
    case create
  }

  private struct Fault {
    var operation: Operation
    var callsLeft: Int
    var errno: Int32
    var pathContains: String?
    var sticky: Bool
  }

  private struct State {
    var faults: [Fault] = []
    var calls: [Operation: Int] = [:]
    var injected: [String] = []
    var trace: [(operation: Operation, path: String)] = []
    /// Bounded: a server run in a test mode makes millions of calls.
    var traceLimit = 100_000
    var maxBytesPerWrite: Int?
    var spaceRemaining: Int64?
    var syncDelay: Duration?
    var onDelayedSync: (@Sendable (_ path: String, _ began: Bool) -> Void)?
  }

  private let base: any StorageFileSystem
  private let state = Mutex(State())

  public init(wrapping base: any StorageFileSystem = POSIXFileSystem()) {
    self.base = base
  }

  /// Calls seen so far, per operation (failed ones included).
  public var calls: [Operation: Int] { state.withLock { $0.calls } }
  /// One line per injected failure, for test diagnostics.
  public var injected: [String] { state.withLock { $0.injected } }
  /// Every checked call in order (operation and path), for tests of what happens before what (the
  /// first 100,000).
  public var trace: [(operation: Operation, path: String)] { state.withLock { $0.trace } }
  /// Each `pwrite` writes at most this many bytes; nil writes everything asked.
  public var maxBytesPerWrite: Int? {
    get { state.withLock { $0.maxBytesPerWrite } }
    set { state.withLock { $0.maxBytesPerWrite = newValue } }
  }
  /// How many more bytes files may grow by. A write that would grow a file further writes what fits
  /// (a short write) and the next one fails with ENOSPC, as a full disk does. Nil: unlimited.
  public var spaceRemaining: Int64? {
    get { state.withLock { $0.spaceRemaining } }
    set { state.withLock { $0.spaceRemaining = newValue } }
  }
  /// Every file and directory sync sleeps this long first (a slow or overloaded disk).
  public var syncDelay: Duration? {
    get { state.withLock { $0.syncDelay } }
    set { state.withLock { $0.syncDelay = newValue } }
  }
  /// Called on the syncing thread just before (`began` true) and just after (false) each
  /// `syncDelay` sleep, with the path synced. A process-level test logs these as markers, so that
  /// it can tell from the log whether the writer thread was inside a slow fsync when the node loop
  /// did something, instead of hoping the timing worked out.
  public var onDelayedSync: (@Sendable (_ path: String, _ began: Bool) -> Void)? {
    get { state.withLock { $0.onDelayedSync } }
    set { state.withLock { $0.onDelayedSync = newValue } }
  }

  /// Makes the `call`th matching call of `operation` from now on (1 = the next) fail with `errno`.
  /// With `sticky`, every matching call after it fails too, like a disk that has gone bad.
  public func fail(
    _ operation: Operation, onCall call: Int = 1, errno: Int32 = EIO, pathContains: String? = nil,
    sticky: Bool = false
  ) {
    precondition(call >= 1)
    let fault = Fault(
      operation: operation, callsLeft: call, errno: errno, pathContains: pathContains, sticky: sticky)
    state.withLock { $0.faults.append(fault) }
  }

  public func clearTrace() { state.withLock { $0.trace.removeAll() } }

  public func clearFaults() {
    state.withLock {
      $0.faults.removeAll()
      $0.maxBytesPerWrite = nil
      $0.spaceRemaining = nil
      $0.syncDelay = nil
      $0.onDelayedSync = nil
    }
  }

  func check(_ operation: Operation, _ path: String) throws(StorageError) {
    let failure: Int32? = state.withLock { state in
      state.calls[operation, default: 0] += 1
      if state.trace.count < state.traceLimit { state.trace.append((operation, path)) }
      for k in state.faults.indices where state.faults[k].operation == operation {
        if let fragment = state.faults[k].pathContains, !path.contains(fragment) { continue }
        if state.faults[k].callsLeft > 1 {
          state.faults[k].callsLeft -= 1
          continue
        }
        let fault = state.faults[k]
        if !fault.sticky { state.faults.remove(at: k) }
        state.injected.append("\(operation) \(path) errno \(fault.errno)")
        return fault.errno
      }
      return nil
    }
    if let failure { throw POSIXFileSystem.error("\(operation) (injected)", path, failure) }
    guard operation == .sync else { return }
    let (delay, observer) = state.withLock { ($0.syncDelay, $0.onDelayedSync) }
    guard let delay else { return }
    observer?(path, true)
    sleepBlocking(delay)
    observer?(path, false)
  }

  /// Charges `growth` bytes against the space budget; returns how many of them fit.
  func reserveSpace(_ growth: Int64) -> Int64 {
    state.withLock { state in
      guard let remaining = state.spaceRemaining, growth > 0 else { return growth }
      let granted = min(growth, remaining)
      state.spaceRemaining = remaining - granted
      return granted
    }
  }

  public func open(_ path: String, mode: FileOpenMode) throws(StorageError) -> any StorageFile {
    if mode == .createNew || mode == .createOrTruncate { try check(.create, path) }
    return FaultInjectingFile(base: try base.open(path, mode: mode), fileSystem: self)
  }

  public func fileExists(_ path: String) -> Bool { base.fileExists(path) }

  public func isDirectory(_ path: String) -> Bool { base.isDirectory(path) }

  public func rename(_ from: String, to: String) throws(StorageError) {
    try check(.rename, from)
    try base.rename(from, to: to)
  }

  public func remove(_ path: String) throws(StorageError) {
    try check(.remove, path)
    try base.remove(path)
  }

  public func listDirectory(_ path: String) throws(StorageError) -> [String] {
    try base.listDirectory(path)
  }

  public func createDirectory(_ path: String) throws(StorageError) {
    try base.createDirectory(path)
  }

  public func syncDirectory(_ path: String) throws(StorageError) {
    try check(.sync, path)
    try base.syncDirectory(path)
  }
}

final class FaultInjectingFile: StorageFile {
  private let base: any StorageFile
  private let fileSystem: FaultInjectingFileSystem

  init(base: any StorageFile, fileSystem: FaultInjectingFileSystem) {
    self.base = base
    self.fileSystem = fileSystem
  }

  var path: String { base.path }

  func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(StorageError) -> Int {
    try base.read(into: buffer, at: offset)
  }

  func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(StorageError) -> Int {
    try fileSystem.check(.write, path)
    var count = min(bytes.count, fileSystem.maxBytesPerWrite ?? bytes.count)
    if fileSystem.spaceRemaining != nil {
      let growth = max(0, offset + Int64(count) - (try base.size()))
      let granted = fileSystem.reserveSpace(growth)
      count -= Int(growth - granted)
      guard count > 0 else { throw .noSpace(path: path) }
    }
    return try base.write(UnsafeRawBufferPointer(rebasing: bytes[..<count]), at: offset)
  }

  func dataSync() throws(StorageError) {
    try fileSystem.check(.sync, path)
    try base.dataSync()
  }

  func sync() throws(StorageError) {
    try fileSystem.check(.sync, path)
    try base.sync()
  }

  func truncate(to size: Int64) throws(StorageError) {
    try fileSystem.check(.truncate, path)
    try base.truncate(to: size)
  }

  func allocate(size: Int64) throws(StorageError) -> Bool {
    try fileSystem.check(.allocate, path)
    let growth = size - (try base.size())
    if growth > 0, fileSystem.reserveSpace(growth) < growth { throw .noSpace(path: path) }
    return try base.allocate(size: size)
  }

  func size() throws(StorageError) -> Int64 { try base.size() }

  func lockExclusive() throws(StorageError) { try base.lockExclusive() }

  func close() { base.close() }
}

/// Sleeps the calling thread (the storage threads block on their disk anyway).
private func sleepBlocking(_ duration: Duration) {
  let (seconds, attoseconds) = duration.components
  var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
  var remaining = timespec()
  // Interrupted by a signal: sleep what is left.
  while nanosleep(&request, &remaining) != 0 { request = remaining }
}
