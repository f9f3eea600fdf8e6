#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The real file system, through POSIX calls. Interrupted calls (EINTR) are retried; every other
/// failure becomes a `StorageError` naming the call, the path and the errno (ENOSPC becomes
/// `.noSpace`).
public final class POSIXFileSystem: StorageFileSystem {
  public init() {}

  public func open(_ path: String, mode: FileOpenMode) throws(StorageError) -> any StorageFile {
    let flags: Int32
    switch mode {
    case .readOnly: flags = O_RDONLY
    case .readWrite: flags = O_RDWR
    case .createNew: flags = O_RDWR | O_CREAT | O_EXCL
    case .createOrTruncate: flags = O_RDWR | O_CREAT | O_TRUNC
    }
    let fd = try retrying("open", path) { systemOpen(path, flags | O_CLOEXEC) }
    return POSIXFile(fd: fd, path: path)
  }

  public func fileExists(_ path: String) -> Bool {
    var status = stat()
    return stat(path, &status) == 0
  }

  public func isDirectory(_ path: String) -> Bool {
    var status = stat()
    return stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFDIR
  }

  public func rename(_ from: String, to: String) throws(StorageError) {
    _ = try retrying("rename", from) { systemRename(from, to) }
  }

  public func remove(_ path: String) throws(StorageError) {
    _ = try retrying("unlink", path) { unlink(path) }
  }

  public func listDirectory(_ path: String) throws(StorageError) -> [String] {
    guard let directory = opendir(path) else { throw Self.error("opendir", path, errno) }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
      let name = withUnsafePointer(to: &entry.pointee.d_name) {
        String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
      }
      if name != "." && name != ".." { names.append(name) }
    }
    return names
  }

  public func createDirectory(_ path: String) throws(StorageError) {
    if mkdir(path, 0o755) != 0 {
      let code = errno
      guard code == EEXIST, isDirectory(path) else { throw Self.error("mkdir", path, code) }
    }
  }

  public func syncDirectory(_ path: String) throws(StorageError) {
    let fd = try retrying("open directory", path) { systemOpen(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
    defer { systemClose(fd) }
    _ = try retrying("fsync directory", path) { fsync(fd) }
  }

  static func error(_ operation: String, _ path: String, _ code: Int32) -> StorageError {
    code == ENOSPC || code == EDQUOT
      ? .noSpace(path: path) : .io(operation: operation, path: path, errno: code)
  }
}

// File-scope shims: inside the types below, `open`, `rename` and `close` name their own methods.
private func systemOpen(_ path: String, _ flags: Int32) -> Int32 { open(path, flags, 0o644) }
private func systemRename(_ from: String, _ to: String) -> Int32 { rename(from, to) }
private func systemClose(_ fd: Int32) { _ = close(fd) }

/// Runs a call that returns -1 and sets errno on failure, retrying EINTR.
@inline(__always)
func retrying<T: FixedWidthInteger>(
  _ operation: String, _ path: String, _ call: () -> T
) throws(StorageError) -> T {
  while true {
    let result = call()
    if result >= 0 { return result }
    let code = errno
    if code != EINTR { throw POSIXFileSystem.error(operation, path, code) }
  }
}

final class POSIXFile: StorageFile {
  let path: String
  private var fd: Int32

  init(fd: Int32, path: String) {
    self.fd = fd
    self.path = path
  }

  deinit { close() }

  func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws(StorageError) -> Int {
    guard buffer.count > 0 else { return 0 }
    return try retrying("pread", path) { pread(fd, buffer.baseAddress, buffer.count, off_t(offset)) }
  }

  func write(_ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(StorageError) -> Int {
    guard bytes.count > 0 else { return 0 }
    return try retrying("pwrite", path) { pwrite(fd, bytes.baseAddress, bytes.count, off_t(offset)) }
  }

  func dataSync() throws(StorageError) {
    #if canImport(Glibc)
      _ = try retrying("fdatasync", path) { fdatasync(fd) }
    #else
      _ = try retrying("fsync", path) { fsync(fd) }
    #endif
  }

  func sync() throws(StorageError) {
    _ = try retrying("fsync", path) { fsync(fd) }
  }

  func truncate(to size: Int64) throws(StorageError) {
    _ = try retrying("ftruncate", path) { ftruncate(fd, off_t(size)) }
  }

  func allocate(size: Int64) throws(StorageError) -> Bool {
    #if canImport(Glibc)
      while true {
        // posix_fallocate returns the error number instead of setting errno.
        let code = posix_fallocate(fd, 0, off_t(size))
        switch code {
        case 0: return true
        case EINTR: continue
        case EOPNOTSUPP, EINVAL, ENOSYS: return false
        default: throw POSIXFileSystem.error("posix_fallocate", path, code)
        }
      }
    #else
      return false
    #endif
  }

  func size() throws(StorageError) -> Int64 {
    var status = stat()
    _ = try retrying("fstat", path) { fstat(fd, &status) }
    return Int64(status.st_size)
  }

  func lockExclusive() throws(StorageError) {
    _ = try retrying("flock", path) { flock(fd, LOCK_EX | LOCK_NB) }
  }

  func close() {
    guard fd >= 0 else { return }
    systemClose(fd)
    fd = -1
  }
}
