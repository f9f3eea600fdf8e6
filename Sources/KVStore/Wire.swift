// Low-level pieces shared by the request codec and the snapshot format. `ByteWriter`/`ByteReader`
// (Raft) are used where they fit (snapshot metadata and idempotency records); the two hot paths —
// reading a request inside `apply` and the key/value records of a snapshot — need varints and
// borrowing reads without a copy per field, which those types do not offer.

extension Array where Element == UInt8 {
  /// LEB128: lengths and revisions are usually small, and a request should stay compact in the log.
  @inline(__always)
  mutating func appendVarint(_ value: UInt64) {
    var rest = value
    while rest >= 0x80 {
      append(UInt8(truncatingIfNeeded: rest) | 0x80)
      rest >>= 7
    }
    append(UInt8(truncatingIfNeeded: rest))
  }

  mutating func appendLengthPrefixed(_ string: String) {
    appendVarint(UInt64(string.utf8.count))
    append(contentsOf: string.utf8)
  }

  mutating func appendLengthPrefixed(_ bytes: UnsafeRawBufferPointer) {
    appendVarint(UInt64(bytes.count))
    append(contentsOf: bytes)
  }
}

/// A bounds-checked reader over borrowed bytes that hands out ranges instead of copies, so that
/// `apply` can parse a request without allocating.
struct WireCursor {
  let bytes: UnsafeRawBufferPointer
  private(set) var offset: Int

  init(_ bytes: UnsafeRawBufferPointer, offset: Int = 0) {
    self.bytes = bytes
    self.offset = offset
  }

  var remaining: Int { bytes.count - offset }

  @inline(__always)
  mutating func readByte() throws(KVDecodingError) -> UInt8 {
    guard offset < bytes.count else { throw .truncated }
    defer { offset += 1 }
    return bytes[offset]
  }

  /// Rejects encodings longer than 10 bytes or overflowing 64 bits, so garbage cannot loop or trap.
  @inline(__always)
  mutating func readVarint() throws(KVDecodingError) -> UInt64 {
    var result: UInt64 = 0
    var shift: UInt64 = 0
    while true {
      let byte = try readByte()
      if shift == 63 && byte > 1 { throw .malformedVarint }
      result |= UInt64(byte & 0x7F) << shift
      if byte < 0x80 { return result }
      shift += 7
    }
  }

  /// A varint length and that many bytes, returned as a range of `bytes`.
  @inline(__always)
  mutating func readLengthPrefixed() throws(KVDecodingError) -> Range<Int> {
    let length = try readVarint()
    guard length <= UInt64(remaining) else { throw .truncated }
    let start = offset
    offset += Int(length)
    return start..<offset
  }

  /// Like `readLengthPrefixed`, and also requires valid UTF-8.
  @inline(__always)
  mutating func readUTF8() throws(KVDecodingError) -> Range<Int> {
    let range = try readLengthPrefixed()
    guard isValidUTF8(UnsafeRawBufferPointer(rebasing: bytes[range])) else { throw .invalidUTF8 }
    return range
  }
}

/// Strict UTF-8 validation (no overlongs, surrogates or code points above U+10FFFF) without creating
/// a `String`: `apply` checks every key and value, so `get` can hand them back unchanged.
func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
  let count = bytes.count
  var index = 0
  while index < count {
    if index + 8 <= count,
      bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self) & 0x8080_8080_8080_8080 == 0
    {
      index += 8
      continue
    }
    let lead = bytes[index]
    if lead < 0x80 {
      index += 1
      continue
    }
    @inline(__always) func continuation(_ offset: Int) -> Bool {
      index + offset < count && bytes[index + offset] & 0xC0 == 0x80
    }
    switch lead {
    case 0xC2...0xDF:
      guard continuation(1) else { return false }
      index += 2
    case 0xE0...0xEF:
      guard continuation(1), continuation(2) else { return false }
      let second = bytes[index + 1]
      if lead == 0xE0 && second < 0xA0 { return false }  // overlong
      if lead == 0xED && second > 0x9F { return false }  // surrogate
      index += 3
    case 0xF0...0xF4:
      guard continuation(1), continuation(2), continuation(3) else { return false }
      let second = bytes[index + 1]
      if lead == 0xF0 && second < 0x90 { return false }  // overlong
      if lead == 0xF4 && second > 0x8F { return false }  // above U+10FFFF
      index += 4
    default:
      return false
    }
  }
  return true
}

/// Detects corruption of a snapshot frame (not tampering). Every step is a bijection of the state for
/// a fixed input word, so any single changed word always changes the result; it runs a word at a
/// time because restore reads hundreds of megabytes.
func frameChecksum(_ bytes: UnsafeRawBufferPointer, seed: UInt64) -> UInt64 {
  let multiplier: UInt64 = 0xFF51_AFD7_ED55_8CCD
  var state = seed ^ 0x9E37_79B9_7F4A_7C15 ^ UInt64(bytes.count)
  var index = 0
  while index + 8 <= bytes.count {
    let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self))
    state = (state ^ word) &* multiplier
    state ^= state >> 29
    index += 8
  }
  var tail: UInt64 = 0
  while index < bytes.count {
    tail = tail << 8 | UInt64(bytes[index])
    index += 1
  }
  state = (state ^ tail) &* multiplier
  state ^= state >> 33
  state &*= 0xC4CE_B9FE_1A85_EC53
  return state ^ (state >> 33)
}

/// Lexicographic byte order (etcd's key order), with a shorter prefix first.
@inline(__always)
func compareBytes(_ left: UnsafeRawBufferPointer, _ right: UnsafeRawBufferPointer) -> Int {
  let common = Swift.min(left.count, right.count)
  if common > 0 {
    let order = memcmpBytes(left.baseAddress!, right.baseAddress!, common)
    if order != 0 { return order }
  }
  return left.count - right.count
}

@inline(__always)
func memcmpBytes(_ left: UnsafeRawPointer, _ right: UnsafeRawPointer, _ count: Int) -> Int {
  var index = 0
  while index + 8 <= count {
    let a = UInt64(bigEndian: left.loadUnaligned(fromByteOffset: index, as: UInt64.self))
    let b = UInt64(bigEndian: right.loadUnaligned(fromByteOffset: index, as: UInt64.self))
    if a != b { return a < b ? -1 : 1 }
    index += 8
  }
  while index < count {
    let a = left.load(fromByteOffset: index, as: UInt8.self)
    let b = right.load(fromByteOffset: index, as: UInt8.self)
    if a != b { return a < b ? -1 : 1 }
    index += 1
  }
  return 0
}
