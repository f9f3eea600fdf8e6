import JSON

// The byte-level HTTP/1.1 the load generator speaks. It parses only what a closed-loop benchmark needs
// (status, framing, Location, Connection) straight from the receive buffer, so that the generator
// spends its CPU on sockets rather than on header dictionaries: on a 2-core machine every
// microsecond it burns is taken from the server it measures.

/// One parsed response. `body` is kept because CAS needs the current value when it loses.
struct BenchResponse: Equatable {
  var status: Int
  var body: [UInt8]
  var location: String?
  var closes: Bool
}

enum BenchParseError: Error, Equatable {
  case malformed(String)
}

/// Incremental parser for responses on one keep-alive connection (Content-Length or chunked bodies).
struct BenchResponseParser {
  private var buffer: [UInt8] = []
  private var start = 0
  /// Copying bodies out costs an allocation per response; only CAS and etcd reads look at them.
  private let keepsBodies: Bool

  init(keepsBodies: Bool = true) {
    self.keepsBodies = keepsBodies
    buffer.reserveCapacity(4096)
  }

  mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
    if start > 0 && start == buffer.count {
      buffer.removeAll(keepingCapacity: true)
      start = 0
    }
    buffer.append(contentsOf: bytes)
  }

  /// Bytes received but not yet consumed by a complete response.
  var pendingBytes: Int { buffer.count - start }

  /// The next complete response, or nil if more bytes are needed.
  mutating func next() throws(BenchParseError) -> BenchResponse? {
    let end = buffer.count
    guard let headEnd = findHeadEnd(from: start, to: end) else {
      if end - start > 64 << 10 { throw .malformed("response head over 64 KiB") }
      return nil
    }
    var response = BenchResponse(status: 0, body: [], location: nil, closes: false)
    var contentLength: Int?
    var chunked = false
    var lineStart = start
    var first = true
    while lineStart < headEnd {
      var lineEnd = lineStart
      while lineEnd < headEnd && buffer[lineEnd] != 13 { lineEnd += 1 }
      if first {
        response.status = try parseStatus(lineStart, lineEnd)
        first = false
      } else if let colon = buffer[lineStart..<lineEnd].firstIndex(of: 58) {
        var valueStart = colon + 1
        while valueStart < lineEnd && (buffer[valueStart] == 32 || buffer[valueStart] == 9) {
          valueStart += 1
        }
        var valueEnd = lineEnd
        while valueEnd > valueStart && (buffer[valueEnd - 1] == 32 || buffer[valueEnd - 1] == 9) {
          valueEnd -= 1
        }
        if nameIs("content-length", lineStart, colon) {
          guard let length = parseDecimal(valueStart, valueEnd) else { throw .malformed("content-length") }
          contentLength = length
        } else if nameIs("transfer-encoding", lineStart, colon) {
          chunked = valueContains("chunked", valueStart, valueEnd)
        } else if nameIs("location", lineStart, colon) {
          response.location = String(decoding: buffer[valueStart..<valueEnd], as: UTF8.self)
        } else if nameIs("connection", lineStart, colon) {
          response.closes = valueContains("close", valueStart, valueEnd)
        }
      }
      lineStart = lineEnd + 2
    }
    let bodyStart = headEnd + 4
    if chunked {
      guard let (body, consumedThrough) = try parseChunked(from: bodyStart, to: end) else { return nil }
      if keepsBodies { response.body = body }
      start = consumedThrough
    } else {
      let length = contentLength ?? 0
      guard end - bodyStart >= length else { return nil }
      if keepsBodies { response.body = Array(buffer[bodyStart..<(bodyStart + length)]) }
      start = bodyStart + length
    }
    if start == buffer.count {
      buffer.removeAll(keepingCapacity: true)
      start = 0
    }
    return response
  }

  private func findHeadEnd(from: Int, to end: Int) -> Int? {
    var k = from
    while k + 3 < end {
      if buffer[k + 3] != 10 {
        k += buffer[k + 3] == 13 ? 1 : 4
        continue
      }
      if buffer[k] == 13 && buffer[k + 1] == 10 && buffer[k + 2] == 13 { return k }
      k += 1
    }
    return nil
  }

  private func parseStatus(_ lineStart: Int, _ lineEnd: Int) throws(BenchParseError) -> Int {
    // "HTTP/1.1 200 OK"
    guard lineEnd - lineStart >= 12, buffer[lineStart] == 72, buffer[lineStart + 8] == 32,
      let code = parseDecimal(lineStart + 9, lineStart + 12)
    else { throw .malformed("status line") }
    return code
  }

  private func parseDecimal(_ from: Int, _ to: Int) -> Int? {
    guard from < to, to - from <= 18 else { return nil }
    var value = 0
    for k in from..<to {
      let digit = Int(buffer[k]) - 48
      guard (0...9).contains(digit) else { return nil }
      value = value * 10 + digit
    }
    return value
  }

  private func nameIs(_ lowercase: StaticString, _ from: Int, _ to: Int) -> Bool {
    guard to - from == lowercase.utf8CodeUnitCount else { return false }
    let name = lowercase.utf8Start
    for k in 0..<(to - from) where buffer[from + k] | 0x20 != name[k] {
      return false
    }
    return true
  }

  private func valueContains(_ lowercase: StaticString, _ from: Int, _ to: Int) -> Bool {
    let count = lowercase.utf8CodeUnitCount
    let needle = lowercase.utf8Start
    guard to - from >= count else { return false }
    outer: for offset in from...(to - count) {
      for k in 0..<count where buffer[offset + k] | 0x20 != needle[k] { continue outer }
      return true
    }
    return false
  }

  /// The de-chunked body and the index just past the last chunk's trailer, or nil if incomplete.
  private func parseChunked(from: Int, to end: Int) throws(BenchParseError) -> ([UInt8], Int)? {
    var body: [UInt8] = []
    var k = from
    while true {
      var size = 0
      var digits = 0
      while k < end, let digit = hexValue(buffer[k]) {
        size = size * 16 + digit
        digits += 1
        k += 1
        guard digits <= 8 else { throw .malformed("chunk size") }
      }
      // Skip chunk extensions up to CRLF.
      while k < end && buffer[k] != 13 { k += 1 }
      guard k + 1 < end else { return nil }
      guard digits > 0, buffer[k + 1] == 10 else { throw .malformed("chunk header") }
      k += 2
      if size == 0 {
        // Trailers (none expected) end with an empty line.
        while true {
          guard k + 1 < end else { return nil }
          if buffer[k] == 13 && buffer[k + 1] == 10 { return (body, k + 2) }
          while k < end && buffer[k] != 13 { k += 1 }
          guard k + 1 < end else { return nil }
          k += 2
        }
      }
      guard end - k >= size + 2 else { return nil }
      guard buffer[k + size] == 13 && buffer[k + size + 1] == 10 else { throw .malformed("chunk length") }
      body.append(contentsOf: buffer[k..<(k + size)])
      k += size + 2
    }
  }

  private func hexValue(_ byte: UInt8) -> Int? {
    switch byte {
    case 48...57: Int(byte) - 48
    case 97...102: Int(byte) - 87
    case 65...70: Int(byte) - 55
    default: nil
    }
  }
}

/// Standard base64 (with padding), as etcd's JSON gateway expects for `bytes` fields.
func base64Append(_ input: some Collection<UInt8>, to output: inout [UInt8]) {
  let alphabet: StaticString = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  let table = alphabet.utf8Start
  var iterator = input.makeIterator()
  while let b0 = iterator.next() {
    let b1 = iterator.next()
    let b2 = iterator.next()
    output.append(table[Int(b0 >> 2)])
    output.append(table[Int((b0 & 0x03) << 4 | (b1 ?? 0) >> 4)])
    output.append(b1.map { table[Int(($0 & 0x0F) << 2 | (b2 ?? 0) >> 6)] } ?? 61)
    output.append(b2.map { table[Int($0 & 0x3F)] } ?? 61)
  }
}

/// Decodes standard base64; nil on any byte outside the alphabet.
func base64Decode(_ input: some Collection<UInt8>) -> [UInt8]? {
  var output: [UInt8] = []
  var accumulator: UInt32 = 0
  var bits = 0
  for byte in input {
    let value: UInt32
    switch byte {
    case 65...90: value = UInt32(byte - 65)
    case 97...122: value = UInt32(byte - 71)
    case 48...57: value = UInt32(byte + 4)
    case 43: value = 62
    case 47: value = 63
    case 61: continue
    default: return nil
    }
    accumulator = accumulator << 6 | value
    bits += 6
    if bits >= 8 {
      bits -= 8
      output.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
    }
  }
  return output
}

/// What a compare-and-set answered: whether it took, and if not, the key's current value (nil when
/// absent), read with the package's one JSON parser.
struct BenchCASOutcome {
  var succeeded: Bool
  var current: [UInt8]?

  /// raftdb answers `{"succeeded":false,"value":"..."}` (docs/API.md). etcd's gateway answers a txn
  /// response that leaves "succeeded" out when it is false and holds the failure branch's range,
  /// with the value in base64: `{"header":{...},"responses":[{"response_range":{"kvs":[{...,
  /// "value":"..."}]}}]}` (no "kvs" when the key is absent).
  init(target: BenchTarget, body: [UInt8]) throws(JSONError) {
    let object = try JSONParser.parse(body)
    succeeded = object["succeeded"]?.boolValue ?? false
    switch target {
    case .raftdb:
      current = object["value"]?.stringValue.map { Array($0.utf8) }
    case .etcd:
      let kv = object["responses"]?[0]?["response_range"]?["kvs"]?[0]
      current = kv?["value"]?.stringValue.flatMap { base64Decode($0.utf8) }
    }
  }
}
