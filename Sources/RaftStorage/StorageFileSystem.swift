/// How a file is opened.
public enum FileOpenMode: Sendable {
  case readOnly
  case readWrite
  /// Creates the file, failing if it exists: storage never reuses a name it did not expect.
  case createNew
  /// Creates the file or empties an existing one (temporary files only).
  case createOrTruncate
}

/// The file operations storage needs, and nothing more. Every byte storage reads or writes goes
/// through this boundary so that tests can make any single call fail (`FaultInjectingFileSystem`).
///
/// Methods map one-to-one onto POSIX calls and keep their partial-result semantics (`write` may write
/// fewer bytes than asked, like `pwrite`); the helpers in the extension below loop where needed.
public protocol StorageFile: AnyObject {
  var path: String { get }
  /// One `pread`: may return fewer bytes than asked (0 at end of file).
  func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(StorageError) -> Int
  /// One `pwrite`: may write fewer bytes than asked.
  func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(StorageError) -> Int
  /// `fdatasync`: data and the metadata needed to read it back (the size), not timestamps.
  func dataSync() throws(StorageError)
  /// `fsync`.
  func sync() throws(StorageError)
  /// `ftruncate`.
  func truncate(to size: Int64) throws(StorageError)
  /// Reserves space up to `size` (`fallocate`), so that later appends overwrite allocated blocks
  /// and an fdatasync need not commit a metadata change. Returns false when the file system cannot
  /// preallocate (the caller carries on without).
  func allocate(size: Int64) throws(StorageError) -> Bool
  func size() throws(StorageError) -> Int64
  /// Takes an exclusive advisory lock (`flock`), failing at once if another holder has it.
  func lockExclusive() throws(StorageError)
  func close()
}

public protocol StorageFileSystem: AnyObject {
  func open(_ path: String, mode: FileOpenMode) throws(StorageError) -> any StorageFile
  func fileExists(_ path: String) -> Bool
  func isDirectory(_ path: String) -> Bool
  /// `rename`: atomically replaces `to` if it exists.
  func rename(_ from: String, to: String) throws(StorageError)
  /// `unlink`.
  func remove(_ path: String) throws(StorageError)
  /// Names (not paths) of the entries in a directory, excluding `.` and `..`, in no particular order.
  func listDirectory(_ path: String) throws(StorageError) -> [String]
  /// `mkdir`; succeeds if the directory exists.
  func createDirectory(_ path: String) throws(StorageError)
  /// `fsync` on the directory itself, which makes creations, renames and unlinks in it durable.
  func syncDirectory(_ path: String) throws(StorageError)
}

extension StorageFile {
  /// Writes all of `bytes`, retrying short writes for the remainder (a short write is legal, for
  /// example when a signal interrupts a large write or the disk fills up part way).
  public func writeAll(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(StorageError) {
    var done = 0
    while done < bytes.count {
      let rest = UnsafeRawBufferPointer(rebasing: bytes[done...])
      let written = try write(rest, at: offset + Int64(done))
      // A zero-byte write would loop forever; no regular file does this, so treat it as an error.
      guard written > 0 else { throw .io(operation: "pwrite (wrote 0 bytes)", path: path, errno: 5) }
      done += written
    }
  }

  public func writeAll(_ bytes: [UInt8], at offset: Int64) throws(StorageError) {
    try bytes.withBytes { (pointer) throws(StorageError) in try writeAll(pointer, at: offset) }
  }

  /// Reads up to `count` bytes from `offset`, fewer only at end of file.
  public func read(count: Int, at offset: Int64) throws(StorageError) -> [UInt8] {
    var result = [UInt8](repeating: 0, count: count)
    let total = try result.withMutableBytes { (buffer) throws(StorageError) -> Int in
      var total = 0
      while total < count {
        let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[total...])
        let got = try read(into: chunk, at: offset + Int64(total))
        if got == 0 { break }
        total += got
      }
      return total
    }
    result.removeLast(count - total)
    return result
  }

  public func readAll() throws(StorageError) -> [UInt8] {
    try read(count: Int(try size()), at: 0)
  }
}
