/// Typed-throws wrappers: the standard library's `withUnsafeBytes` is `rethrows`, which erases a
/// typed error to `any Error`; storage keeps `StorageError` typed end to end.
extension Array where Element == UInt8 {
  func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws(StorageError) -> R) throws(StorageError) -> R {
    let result: Result<R, StorageError> = withUnsafeBytes { pointer in
      Result { () throws(StorageError) -> R in try body(pointer) }
    }
    return try result.get()
  }

  mutating func withMutableBytes<R>(
    _ body: (UnsafeMutableRawBufferPointer) throws(StorageError) -> R
  ) throws(StorageError) -> R {
    let result: Result<R, StorageError> = withUnsafeMutableBytes { pointer in
      Result { () throws(StorageError) -> R in try body(pointer) }
    }
    return try result.get()
  }
}

/// A reusable, growable byte buffer for building a WAL batch: the hot path encodes every batch into
/// the same memory and hands it to a single `pwrite`, with no per-entry allocation and none of
/// `Array`'s uniqueness checks in the inner loop.
final class WriteBuffer {
  private(set) var pointer: UnsafeMutableRawPointer
  private(set) var capacity: Int
  /// Bytes in use.
  var count = 0

  init(capacity: Int = 64 * 1024) {
    self.capacity = max(capacity, 64)
    pointer = .allocate(byteCount: self.capacity, alignment: 16)
  }

  deinit { pointer.deallocate() }

  /// Empties the buffer and makes room for `size` bytes without zeroing them. Memory a single huge
  /// batch needed is given back once batches are small again.
  func reset(reserving size: Int) {
    count = 0
    let shrink = capacity > 16 << 20 && size < capacity / 8
    guard size > capacity || shrink else { return }
    var newCapacity = shrink ? 64 * 1024 : capacity
    while newCapacity < size { newCapacity *= 2 }
    pointer.deallocate()
    pointer = .allocate(byteCount: newCapacity, alignment: 16)
    capacity = newCapacity
  }

  var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: pointer, count: count) }
}

/// Big-endian field access on raw bytes read from disk (no alignment assumed).
extension UnsafeRawBufferPointer {
  @inline(__always) func loadBigEndian<T: FixedWidthInteger>(at offset: Int, as type: T.Type) -> T {
    T(bigEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
  }

  /// Whether every byte from `start` on is zero (the unwritten tail of a preallocated file).
  func isAllZero(from start: Int) -> Bool {
    var index = start
    while index + 8 <= count {
      if loadUnaligned(fromByteOffset: index, as: UInt64.self) != 0 { return false }
      index += 8
    }
    while index < count {
      if self[index] != 0 { return false }
      index += 1
    }
    return true
  }
}

extension UnsafeMutableRawBufferPointer {
  @inline(__always) func storeBigEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
    storeBytes(of: value.bigEndian, toByteOffset: offset, as: T.self)
  }
}
