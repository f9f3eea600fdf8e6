import Testing

@_spi(Testing) @testable import Raft

/// Bytes that must not decode as a configuration, and the failure expected.
struct BadConfigurationBytes: Sendable, CustomTestStringConvertible {
  enum Expected: Sendable, Equatable {
    case exactly(ByteReader.Failure)
    case invalidValue
  }

  var name: String
  var bytes: [UInt8]
  var expected: Expected
  var testDescription: String { name }

  /// Encodes members by hand, so that ids, flags and lengths can be anything.
  static func encode(
    version: UInt8 = 1, count: UInt32? = nil, members: [(id: UInt64, flag: UInt8, context: [UInt8])],
    contextLength: UInt32? = nil
  ) -> [UInt8] {
    var writer = ByteWriter()
    writer.write(version)
    writer.write(count ?? UInt32(members.count))
    for member in members {
      writer.write(member.id)
      writer.write(member.flag)
      writer.write(contextLength ?? UInt32(member.context.count))
      writer.writeRaw(member.context)
    }
    return writer.bytes
  }

  static let all: [BadConfigurationBytes] = [
    BadConfigurationBytes(
      name: "trailing byte", bytes: Configuration(voters: ids([1, 2])).encoded() + [0],
      expected: .invalidValue),
    BadConfigurationBytes(
      name: "duplicate ids", bytes: encode(members: [(5, 1, []), (5, 0, [])]), expected: .invalidValue),
    BadConfigurationBytes(name: "member id 0", bytes: encode(members: [(0, 1, [])]), expected: .invalidValue),
    BadConfigurationBytes(
      name: "unknown version", bytes: encode(version: 2, members: [(1, 1, [])]), expected: .invalidValue),
    BadConfigurationBytes(
      name: "voter flag neither 0 nor 1", bytes: encode(members: [(1, 2, [])]), expected: .invalidValue),
    BadConfigurationBytes(
      name: "huge member count", bytes: encode(count: .max, members: []),
      expected: .exactly(.lengthTooLarge(Int(UInt32.max), limit: Configuration.memberCountLimit))),
    BadConfigurationBytes(
      name: "member count just over the limit", bytes: encode(count: 1025, members: []),
      expected: .exactly(.lengthTooLarge(1025, limit: 1024))),
    BadConfigurationBytes(
      name: "member count at the limit but no members", bytes: encode(count: 1024, members: []),
      expected: .exactly(.truncated(needed: 8, available: 0))),
    BadConfigurationBytes(
      name: "huge context length", bytes: encode(members: [(1, 1, [])], contextLength: .max),
      expected: .exactly(.lengthTooLarge(Int(UInt32.max), limit: Configuration.contextSizeLimit))),
    BadConfigurationBytes(
      name: "context length just over the limit", bytes: encode(members: [(1, 1, [])], contextLength: 65_537),
      expected: .exactly(.lengthTooLarge(65_537, limit: 65_536))),
    BadConfigurationBytes(
      name: "context shorter than its length", bytes: encode(members: [(1, 1, [1, 2])], contextLength: 3),
      expected: .exactly(.truncated(needed: 3, available: 2))),
    BadConfigurationBytes(
      name: "empty input", bytes: [], expected: .exactly(.truncated(needed: 1, available: 0))),
  ]
}

@Suite struct EncodingTests {
  static let configurations: [Configuration] = [
    .empty,
    Configuration(voters: ids([1])),
    Configuration(voters: ids([3, 1, 2]), learners: ids([9])),
    Configuration(members: [
      Member(id: NodeID(1), isVoter: true, context: Array("node01 10.0.0.1:7000".utf8)),
      Member(id: NodeID(.max), isVoter: false, context: [0, 255, 0, 10, 13]),
      Member(id: NodeID(7), isVoter: true, context: []),
    ]),
    Configuration(members: [
      Member(
        id: NodeID(2), isVoter: true, context: [UInt8](repeating: 0xAB, count: Configuration.contextSizeLimit)
      )
    ]),
  ]

  /// Configurations travel and persist as bytes, so decoding must return exactly what was encoded.
  @Test(arguments: configurations)
  func configurationRoundTrips(_ configuration: Configuration) throws {
    let bytes = configuration.encoded()
    #expect(try Configuration(decoding: bytes) == configuration)

    // Embedded in a longer stream, it reads exactly its own bytes.
    var writer = ByteWriter()
    configuration.encode(into: &writer)
    writer.write(UInt64(0xDEAD_BEEF))
    var reader = ByteReader(writer.bytes)
    #expect(try Configuration(from: &reader) == configuration)
    #expect(try reader.readUInt64() == 0xDEAD_BEEF && reader.isAtEnd)
  }

  /// Bytes from disk or a peer may be corrupt or hostile: every truncation is refused, never trapped on.
  @Test(arguments: configurations[2...3])
  func everyTruncationIsRefused(_ configuration: Configuration) {
    let bytes = configuration.encoded()
    for length in 0..<bytes.count {
      let error = #expect(throws: ByteReader.Failure.self) {
        try Configuration(decoding: Array(bytes[..<length]))
      }
      guard case .truncated? = error else {
        Issue.record("prefix of \(length) bytes failed with \(String(describing: error))")
        return
      }
    }
  }

  /// Corrupt or hostile bytes are refused with a reason (and without allocating what a length claims).
  @Test(arguments: BadConfigurationBytes.all)
  func malformedConfigurationsAreRefused(_ bad: BadConfigurationBytes) {
    let error = #expect(throws: ByteReader.Failure.self) { try Configuration(decoding: bad.bytes) }
    switch bad.expected {
    case .exactly(let failure):
      #expect(error == failure)
    case .invalidValue:
      guard case .invalidValue? = error else {
        Issue.record("expected invalidValue, got \(String(describing: error))")
        return
      }
    }
  }

  /// The shared wire encoding is big-endian and bounds-checked.
  @Test func byteReaderReadsWhatByteWriterWroteAndRefusesOverruns() throws {
    var writer = ByteWriter()
    writer.write(UInt8(0x01))
    writer.write(UInt16(0x0203))
    writer.write(UInt32(0x0405_0607))
    writer.write(UInt64(0x0809_0A0B_0C0D_0E0F))
    writer.write(true)
    writer.writeLengthPrefixed([0xAA, 0xBB])
    #expect(writer.bytes == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 1, 0, 0, 0, 2, 0xAA, 0xBB])

    var reader = ByteReader(writer.bytes)
    #expect(try reader.readUInt8() == 1)
    #expect(try reader.readUInt16() == 0x0203)
    #expect(try reader.readUInt32() == 0x0405_0607)
    #expect(try reader.readUInt64() == 0x0809_0A0B_0C0D_0E0F)
    #expect(try reader.readBool())
    #expect(try reader.readLengthPrefixed(limit: 2) == [0xAA, 0xBB])
    #expect(reader.isAtEnd)
    #expect(throws: ByteReader.Failure.truncated(needed: 1, available: 0)) { try reader.readUInt8() }

    var short = ByteReader([1, 2, 3])
    #expect(throws: ByteReader.Failure.truncated(needed: 8, available: 3)) { try short.readUInt64() }
    #expect(short.offset == 0, "a failed read consumes nothing")
    #expect(throws: ByteReader.Failure.truncated(needed: -1, available: 3)) { try short.readRaw(count: -1) }
    #expect(throws: ByteReader.Failure.truncated(needed: .max, available: 3)) {
      try short.readRaw(count: .max)
    }

    var bounded = ByteReader([0, 0, 0, 3, 1, 2, 3])
    #expect(throws: ByteReader.Failure.lengthTooLarge(3, limit: 2)) {
      try bounded.readLengthPrefixed(limit: 2)
    }

    var window = ByteReader([9, 1, 2, 9], offset: 1, end: 3)
    #expect(window.remaining == 2)
    #expect(try window.readUInt16() == 0x0102)
    #expect(throws: ByteReader.Failure.truncated(needed: 1, available: 0)) { try window.readUInt8() }
  }
}
