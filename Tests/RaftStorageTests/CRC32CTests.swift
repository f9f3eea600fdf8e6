@_spi(Testing) import RaftStorage
import Testing

@Suite struct CRC32CTests {
  /// Bit-at-a-time reference, straight from the definition.
  static func reference(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xFFFF_FFFF
    for byte in bytes {
      crc ^= UInt32(byte)
      for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
    }
    return ~crc
  }

  @Test func knownVectors() {
    #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    #expect(CRC32C.checksum([UInt8]()) == 0)
    // RFC 3720 (iSCSI) appendix B.4.
    #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
    #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
    #expect(CRC32C.checksum((0..<32).map { UInt8($0) }) == 0x46DD_794E)
    #expect(CRC32C.checksum((0..<32).map { UInt8(31 - $0) }) == 0x113F_DB5C)
  }

  @Test func slicingMatchesReferenceAtEveryLengthAndAlignment() {
    var generator = SystemRandomNumberGenerator()
    let bytes = (0..<300).map { _ in UInt8.random(in: 0...255, using: &generator) }
    for start in 0..<9 {
      for end in stride(from: start, through: bytes.count, by: 7) {
        let slice = Array(bytes[start..<end])
        #expect(CRC32C.checksum(bytes[start..<end]) == Self.reference(slice))
      }
    }
  }

  @Test func updateContinuesAChecksum() {
    let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    for split in [0, 1, 7, 8, 9, 500, 999, 1000] {
      let first = CRC32C.checksum(bytes[..<split])
      let whole = bytes[split...].withUnsafeBytes { CRC32C.update(first, $0) }
      #expect(whole == CRC32C.checksum(bytes))
    }
  }

  @Test func combineEqualsChecksumOfConcatenation() {
    let bytes = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) }
    for split in [0, 1, 3, 8, 100, 4095, 4999, 5000] {
      let a = CRC32C.checksum(bytes[..<split])
      let b = CRC32C.checksum(bytes[split...])
      #expect(CRC32C.combine(a, b, lengthB: Int64(bytes.count - split)) == CRC32C.checksum(bytes))
    }
  }
}
