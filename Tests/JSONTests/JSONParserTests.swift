import JSON
import Testing

/// What the parser accepts and what it refuses (RFC 8259, strictly).
@Suite struct JSONParserTests {
  static let accepted: [(text: String, value: JSONValue)] = [
    ("{}", .object([])),
    (" { } ", .object([])),
    ("[ ]", .array([])),
    (
      #"{"a":[1,{"b":null}],"c":true}"#,
      JSONValue(["a": .array([.number("1"), JSONValue(["b": .null])]), "c": .bool(true)])
    ),
    (" [ 1 , -0.5e+3 , 0 ] ", .array([.number("1"), .number("-0.5e+3"), .number("0")])),
    (#""a\"\\\/\b\f\n\r\t\u00e9\ud83c\udf89""#, .string("a\"\\/\u{8}\u{c}\n\r\té🎉")),
    ("\"grüße 日本\"", .string("grüße 日本")),
    ("false", .bool(false)),
  ]

  static let refused: [[UInt8]] =
    [
      "", "[1,]", #"{"a":1,}"#, "[1 2]", #"{"a" 1}"#, #"{"a":1 "b":2}"#, "{1:2}", "[", "{", #"{"a":"#, "01",
      "1.", "-", "1e", "tru", "nul", "[1]]", "\"\\x\"", "\"\\ud800\"", "\"\\udc00\"", "\"tab\there\"",
      "// no",
    ].map { Array($0.utf8) } + [
      [0x22, 0xFF, 0x22],  // not UTF-8 at all
      [0x22, 0xC0, 0xAF, 0x22],  // an overlong "/"
      [0x22, 0xED, 0xA0, 0x80, 0x22],  // a surrogate encoded in UTF-8
      [0x22, 0xF0, 0x9F, 0x8E, 0x61, 0x22],  // a 4-byte sequence cut short, then "a"
      [0x22, 0xE6, 0x97, 0x22],  // a 3-byte sequence cut short
    ]

  @Test func wellFormedDocumentsParse() throws {
    for (text, value) in Self.accepted {
      #expect(try JSONParser.parse(Array(text.utf8)) == value, "\(text)")
    }
  }

  @Test func malformedDocumentsAreRefusedWithTheirOffset() {
    for bytes in Self.refused {
      #expect(throws: JSONError.self, "\(bytes)") { _ = try JSONParser.parse(bytes) }
    }
    do {
      _ = try JSONParser.parse(Array("[1,2 3]".utf8))
      Issue.record("accepted")
    } catch {
      #expect(error.description == "malformed JSON at byte 5: expected ',' or ']'")
    }
  }
}
