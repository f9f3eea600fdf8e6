import Raft
import Testing

@testable import KVStore

@Suite struct CodecTests {
  static let requests: [KVRequest] = [
    KVRequest(command: put("a", "1"), proposedAtMillis: 0),
    KVRequest(command: put("key", ""), idempotencyKey: "retry-1", proposedAtMillis: UInt64.max),
    KVRequest(command: put(["x": "1", "y": "2", "z": "3"]), proposedAtMillis: 1_700_000_000_000),
    KVRequest(command: .put([]), proposedAtMillis: 1),
    KVRequest(command: .delete(key: "gone"), proposedAtMillis: 127),
    KVRequest(command: .delete(key: ""), idempotencyKey: "", proposedAtMillis: 128),
    KVRequest(command: .compareAndSet(key: "k", expected: nil, value: "v"), proposedAtMillis: 5),
    KVRequest(command: .compareAndSet(key: "k", expected: "", value: ""), proposedAtMillis: 5),
    KVRequest(
      command: .compareAndSet(key: "\u{1F600}/ключ", expected: "caf\u{E9}", value: "cafe\u{301}"),
      idempotencyKey: "id", proposedAtMillis: 99),
    KVRequest(command: put("big", String(repeating: "v", count: 70_000)), proposedAtMillis: 3),
  ]

  @Test(arguments: requests)
  func roundTrip(_ request: KVRequest) throws {
    let bytes = request.encoded()
    let decoded = try KVRequest(decoding: bytes)
    #expect(decoded == request)
    // Byte-exact: canonically equivalent spellings must not be merged by decoding.
    if case .compareAndSet(let key, let expected, let value) = decoded.command,
      case .compareAndSet(let key0, let expected0, let value0) = request.command
    {
      #expect(Array(key.utf8) == Array(key0.utf8))
      #expect(expected.map { Array($0.utf8) } == expected0.map { Array($0.utf8) })
      #expect(Array(value.utf8) == Array(value0.utf8))
    }
  }

  @Test func encodingIsCompact() {
    // version, flags, time (1 byte), tag, count, 1+1, 1+1
    #expect(KVRequest(command: put("a", "b"), proposedAtMillis: 5).encoded().count == 9)
    let typical = KVRequest(
      command: put(String(repeating: "k", count: 16), String(repeating: "v", count: 256)),
      idempotencyKey: "0123456789abcdef0123456789abcdef0123", proposedAtMillis: 1_700_000_000_000)
    #expect(typical.encoded().count <= 16 + 256 + 36 + 16)
  }

  @Test func everyTruncationIsRejected() throws {
    for request in Self.requests.prefix(9) {
      let bytes = request.encoded()
      for length in 0..<bytes.count {
        #expect(throws: KVDecodingError.self) { try KVRequest(decoding: Array(bytes[..<length])) }
      }
    }
  }

  struct GarbageCase: Sendable, CustomTestStringConvertible {
    var name: String
    var bytes: [UInt8]
    var error: KVDecodingError
    var testDescription: String { name }
  }

  static let garbage: [GarbageCase] = [
    GarbageCase(name: "empty", bytes: [], error: .truncated),
    GarbageCase(name: "unknown version", bytes: [2, 0, 0, 2, 1, 0x61], error: .unsupportedVersion(2)),
    GarbageCase(name: "unknown flag", bytes: [1, 2, 0, 2, 1, 0x61], error: .unknownTag(2)),
    GarbageCase(name: "unknown command", bytes: [1, 0, 0, 99], error: .unknownTag(99)),
    GarbageCase(name: "trailing byte", bytes: [1, 0, 0, 2, 1, 0x61, 0], error: .trailingBytes(1)),
    GarbageCase(name: "invalid UTF-8 key", bytes: [1, 0, 0, 2, 1, 0xFF], error: .invalidUTF8),
    GarbageCase(
      name: "surrogate in value", bytes: [1, 0, 0, 1, 1, 1, 0x61, 3, 0xED, 0xA0, 0x80], error: .invalidUTF8),
    GarbageCase(name: "overlong encoding", bytes: [1, 0, 0, 2, 2, 0xC0, 0xAF], error: .invalidUTF8),
    GarbageCase(
      name: "varint over 64 bits", bytes: [1, 0] + Array(repeating: 0xFF, count: 9) + [0x02],
      error: .malformedVarint),
    GarbageCase(
      name: "endless varint", bytes: [1, 0] + Array(repeating: 0x80, count: 40), error: .malformedVarint),
    GarbageCase(
      name: "huge pair count", bytes: [1, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F], error: .truncated),
    GarbageCase(name: "length past the end", bytes: [1, 0, 0, 2, 0x80, 0x01, 0x61], error: .truncated),
    GarbageCase(name: "bad has-expected byte", bytes: [1, 0, 0, 3, 2, 1, 0x61, 0], error: .unknownTag(2)),
  ]

  @Test(arguments: garbage)
  func garbageIsRejected(_ testCase: GarbageCase) {
    #expect(throws: testCase.error) { try KVRequest(decoding: testCase.bytes) }
    let driver = Driver()
    let outcome = driver.applyBytes(testCase.bytes)
    #expect(outcome.result == .rejected(reason: "undecodable command: \(testCase.error)"))
    #expect(driver.machine.appliedIndex == 1)
    #expect(driver.machine.revision == 0)
  }

  /// Random bytes and mutated valid requests: decoding and applying must never trap, a request that
  /// decodes must apply as a command (never "undecodable"), and replicas must agree.
  @Test func fuzzNeverTraps() {
    var random = SplitMix64(seed: 0x5EED)
    let replicas = (Driver(), Driver())
    var decoded = 0
    for round in 0..<6_000 {
      var bytes: [UInt8]
      if round % 2 == 0 {
        bytes = random.bytes(count: Int.random(in: 0...48, using: &random))
        if round % 4 == 0 && !bytes.isEmpty { bytes[0] = 1 }
        if round % 8 == 0 && bytes.count > 1 { bytes[1] = 0 }
      } else {
        bytes = Self.requests.randomElement(using: &random)!.encoded()
        for _ in 0..<Int.random(in: 1...3, using: &random) where !bytes.isEmpty {
          let index = Int.random(in: 0..<bytes.count, using: &random)
          bytes[index] ^= UInt8(1) << UInt8.random(in: 0...7, using: &random)
        }
        if Bool.random(using: &random) { bytes.removeLast(Int.random(in: 0...bytes.count, using: &random)) }
      }
      let request = try? KVRequest(decoding: bytes)
      if request != nil { decoded += 1 }
      let outcome = replicas.0.applyBytes(bytes)
      #expect(outcome == replicas.1.applyBytes(bytes))
      if case .rejected(let reason) = outcome.result {
        #expect(reason.hasPrefix("undecodable") == (request == nil), "\(bytes)")
      }
    }
    #expect(decoded > 100, "the fuzzer should also reach the decoder's success paths")
    #expect(replicas.0.machine.canonicalState() == replicas.1.machine.canonicalState())
  }

  /// The hand-written validator must agree with the standard library's.
  @Test func utf8ValidationMatchesTheStandardLibrary() {
    func check(_ bytes: [UInt8]) {
      let ours = bytes.withUnsafeBytes { isValidUTF8($0) }
      #expect(ours == (String(validating: bytes, as: UTF8.self) != nil), "\(bytes)")
    }
    for a in 0...255 { check([UInt8(a)]) }
    for a in 0xC0...0xFF {
      for b in 0...255 { check([UInt8(a), UInt8(b)]) }
    }
    let interesting: [UInt8] = [
      0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5,
      0xFF,
    ]
    for a in [0xE0, 0xE1, 0xED, 0xEE, 0xF0, 0xF1, 0xF4, 0xF5] as [UInt8] {
      for b in interesting {
        for c in interesting {
          check([a, b, c])
          for d in interesting { check([a, b, c, d]) }
        }
      }
    }
    var random = SplitMix64(seed: 7)
    for _ in 0..<20_000 {
      // Mostly ASCII with some multi-byte material, so runs exercise the 8-byte fast path too.
      var bytes = Array("plain ascii text, then: ".utf8).prefix(Int.random(in: 0...24, using: &random)).map {
        $0
      }
      for _ in 0..<Int.random(in: 0...12, using: &random) {
        bytes.append(
          Bool.random(using: &random)
            ? UInt8.random(in: 0x20...0x7E, using: &random) : interesting.randomElement(using: &random)!)
      }
      check(bytes)
      check(Array("ok \u{E9}\u{4E2D}\u{1F600} text that is long enough".utf8) + bytes)
    }
  }
}
