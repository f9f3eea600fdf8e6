/// Remembers the first failed write or sync. After a failed fsync the kernel may have dropped the
/// dirty pages or marked them clean, so nothing about unsynced data can be trusted any more; the only
/// safe continuation is to stop writing and let a reopen read back what is really on disk.
final class FailureState {
  private(set) var cause: String?

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
      if case .misuse = error {} else if cause == nil { cause = error.description }
      throw error
    }
  }
}
