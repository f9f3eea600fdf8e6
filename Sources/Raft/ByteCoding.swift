/// Minimal big-endian binary encoding shared by the core (configuration entries) and by the layers
/// above it (WAL records, wire frames). It lives here because `Raft` may not depend on anything else,
/// and every other module already depends on `Raft`.
public struct ByteWriter: Sendable {
  public private(set) var bytes: [UInt8]

  public init(capacity: Int = 64) {
    bytes = []
    bytes.reserveCapacity(capacity)
  }

  public mutating func write(_ value: UInt8) { bytes.append(value) }

  public mutating func write(_ value: UInt16) { writeInteger(value) }

  public mutating func write(_ value: UInt32) { writeInteger(value) }

  public mutating func write(_ value: UInt64) { writeInteger(value) }

  public mutating func write(_ value: Bool) { bytes.append(value ? 1 : 0) }

  /// Writes a 32-bit length followed by the bytes.
  public mutating func writeLengthPrefixed(_ value: [UInt8]) {
    write(UInt32(value.count))
    bytes.append(contentsOf: value)
  }

  public mutating func writeRaw(_ value: [UInt8]) { bytes.append(contentsOf: value) }

  @inline(__always)
  private mutating func writeInteger<T: FixedWidthInteger>(_ value: T) {
    var bigEndian = value.bigEndian
    withUnsafeBytes(of: &bigEndian) { bytes.append(contentsOf: $0) }
  }
}

/// Reads what `ByteWriter` wrote, refusing (never trapping on) truncated or oversized input: the
/// bytes may come from a corrupt file or a hostile peer.
public struct ByteReader {
  public enum Failure: Error, Equatable, Sendable {
    case truncated(needed: Int, available: Int)
    case lengthTooLarge(Int, limit: Int)
    case invalidValue(String)
  }

  private let bytes: [UInt8]
  public private(set) var offset: Int
  private let end: Int

  public init(_ bytes: [UInt8], offset: Int = 0, end: Int? = nil) {
    precondition(offset >= 0 && offset <= (end ?? bytes.count) && (end ?? bytes.count) <= bytes.count)
    self.bytes = bytes
    self.offset = offset
    self.end = end ?? bytes.count
  }

  public var remaining: Int { end - offset }

  public var isAtEnd: Bool { offset == end }

  public mutating func readUInt8() throws(Failure) -> UInt8 {
    try require(1)
    defer { offset += 1 }
    return bytes[offset]
  }

  public mutating func readBool() throws(Failure) -> Bool {
    switch try readUInt8() {
    case 0: return false
    case 1: return true
    case let other: throw .invalidValue("boolean byte \(other)")
    }
  }

  public mutating func readUInt16() throws(Failure) -> UInt16 { try readInteger() }

  public mutating func readUInt32() throws(Failure) -> UInt32 { try readInteger() }

  public mutating func readUInt64() throws(Failure) -> UInt64 { try readInteger() }

  /// Reads a 32-bit length and that many bytes; `limit` bounds the allocation a corrupt length
  /// could otherwise demand.
  public mutating func readLengthPrefixed(limit: Int) throws(Failure) -> [UInt8] {
    let count = Int(try readUInt32())
    guard count <= limit else { throw .lengthTooLarge(count, limit: limit) }
    return try readRaw(count: count)
  }

  public mutating func readRaw(count: Int) throws(Failure) -> [UInt8] {
    try require(count)
    defer { offset += count }
    return Array(bytes[offset..<offset + count])
  }

  @inline(__always)
  private func require(_ count: Int) throws(Failure) {
    guard count >= 0, remaining >= count else {
      throw .truncated(needed: count, available: remaining)
    }
  }

  @inline(__always)
  private mutating func readInteger<T: FixedWidthInteger>() throws(Failure) -> T {
    let size = MemoryLayout<T>.size
    try require(size)
    var value: T = 0
    for byte in bytes[offset..<offset + size] {
      value = value << 8 | T(byte)
    }
    offset += size
    return value
  }
}
