import Synchronization

/// Remembers the first failed write or sync. After a failed fsync the kernel may have dropped the
/// dirty pages or marked them clean, so nothing about unsynced data can be trusted any more; the only
/// safe continuation is to stop writing and let a reopen read back what is really on disk.
///
/// Thread-safe: the snapshot store checks it from the node loop while the writer thread may set it.
final class FailureState {
  private let state = Mutex<String?>(nil)

  var cause: String? { state.withLock { $0 } }

  func check() throws(StorageError) {
    if let cause { throw .failed(cause: cause) }
  }

  /// Runs `body`; if it throws, the store is failed from then on. Misuse is the caller's error and
  /// leaves the store intact.
  func guarding<R>(_ body: () throws(StorageError) -> R) throws(StorageError) -> R {
    try check()
    do {
      return try body()
    } catch {
      if case .misuse = error {} else { state.withLock { if $0 == nil { $0 = error.description } } }
      throw error
    }
  }
}
