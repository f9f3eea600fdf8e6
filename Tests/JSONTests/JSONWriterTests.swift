import Foundation
import JSON
import Testing

/// The writer's output is what Foundation's JSONSerialization wrote with `[.sortedKeys,
/// .withoutEscapingSlashes]` (raftctl printed with it, and scripts read raftctl's output), and the
/// parser reads it back.
@Suite struct JSONWriterTests {
  /// Every string a key or value may hold: quotes, backslashes, slashes, each control character,
  /// DEL, non-ASCII and a character outside the basic plane.
  static let strings: [String] = [
    "", "plain", "quote \" and backslash \\", "a/b/c", "http://127.0.0.1:8091/key/foo?level=stale",
    String((0..<0x20).map { Character(Unicode.Scalar(UInt8($0))) }), "del \u{7F}", "grüße", "日本",
    "emoji 🎉", "line\u{2028}separator",
  ]

  /// The same value as a JSONValue and as what JSONSerialization takes.
  struct Pair {
    var value: JSONValue
    var foundation: Any
  }

  static var pairs: [Pair] {
    var pairs: [Pair] = []
    for text in strings {
      pairs.append(Pair(value: JSONValue([text: JSONValue(text)]), foundation: [text: text]))
    }
    // The shapes raftctl prints: each command's object and the bench report's numbers.
    pairs.append(
      Pair(
        value: JSONValue(["succeeded": JSONValue(false), "value": JSONValue(nil as String?)]),
        foundation: ["succeeded": false, "value": NSNull()]))
    pairs.append(
      Pair(value: JSONValue(["revision": JSONValue(UInt64.max)]), foundation: ["revision": UInt64.max]))
    pairs.append(Pair(value: JSONValue(["deleted": JSONValue(true)]), foundation: ["deleted": true]))
    let doubles: [Double] = [
      0, 1, -1, 12, 0.5, 1234.5, 12345.6, 0.001, 1e-7, 123_456_789_012, 1e16, 1e20, 3.14159,
    ]
    for number in doubles {
      pairs.append(Pair(value: JSONValue(["d": JSONValue(number)]), foundation: ["d": number]))
    }
    let ints: [Int] = [0, -1, 42, Int.max, Int.min]
    for number in ints {
      pairs.append(Pair(value: JSONValue(["i": JSONValue(number)]), foundation: ["i": number]))
    }
    pairs.append(
      Pair(
        value: JSONValue([
          "writes": JSONValue(3), "window_s": JSONValue(10.0), "warmup_s": JSONValue(2.5),
          "value_size": JSONValue(128), "target": JSONValue("raftdb"), "shape": JSONValue("get(stale)"),
          "seed": JSONValue(UInt64(7)), "reconnects": JSONValue(0), "redirects": JSONValue(0),
          "reads": JSONValue(5), "path": JSONValue("raftdb-http-json"), "ops_per_sec": JSONValue(9876.5),
          "ops": JSONValue(98765), "op": JSONValue("get"), "level": JSONValue("stale"),
          "latency_us": JSONValue([
            "p99_9": JSONValue(UInt64(900)), "p99": JSONValue(UInt64(800)), "p90": JSONValue(UInt64(300)),
            "p50": JSONValue(UInt64(100)), "mean": JSONValue(120.3), "max": JSONValue(UInt64(5000)),
          ]),
          "keys": JSONValue(10_000), "key_size": JSONValue(16),
          "errors": JSONValue(["http_503": JSONValue(2)]),
          "error_count": JSONValue(2), "connected_to": JSONValue("leader"), "clients": JSONValue(64),
          "cas_failed": JSONValue(0),
          "list": .array([JSONValue(1), JSONValue("a/b"), .array([]), JSONValue([:])]),
        ]),
        foundation: [
          "writes": 3, "window_s": 10.0, "warmup_s": 2.5, "value_size": 128, "target": "raftdb",
          "shape": "get(stale)", "seed": UInt64(7), "reconnects": 0, "redirects": 0, "reads": 5,
          "path": "raftdb-http-json", "ops_per_sec": 9876.5, "ops": 98765, "op": "get", "level": "stale",
          "latency_us": [
            "p99_9": UInt64(900), "p99": UInt64(800), "p90": UInt64(300), "p50": UInt64(100), "mean": 120.3,
            "max": UInt64(5000),
          ],
          "keys": 10_000, "key_size": 16, "errors": ["http_503": 2], "error_count": 2,
          "connected_to": "leader",
          "clients": 64, "cas_failed": 0, "list": [1, "a/b", [Any](), [String: Any]()],
        ]))
    return pairs
  }

  @Test func outputIsWhatJSONSerializationWrote() throws {
    for pair in Self.pairs {
      let ours = String(decoding: pair.value.serialized(sortingKeys: true), as: UTF8.self)
      let data = try JSONSerialization.data(
        withJSONObject: pair.foundation, options: [.sortedKeys, .withoutEscapingSlashes])
      #expect(ours == String(decoding: data, as: UTF8.self))
    }
  }

  @Test func theParserReadsBackWhatTheWriterWrote() throws {
    for pair in Self.pairs {
      let bytes = pair.value.serialized()
      #expect(try JSONParser.parse(bytes) == pair.value)
    }
  }

  /// Without `sortingKeys`, members keep their order; the incremental calls write the same bytes.
  @Test func membersKeepTheirOrderUnlessSorted() {
    let value = JSONValue(["b": JSONValue(1), "a": .array([JSONValue("x"), .null])])
    #expect(String(decoding: value.serialized(), as: UTF8.self) == #"{"b":1,"a":["x",null]}"#)
    #expect(
      String(decoding: value.serialized(sortingKeys: true), as: UTF8.self) == #"{"a":["x",null],"b":1}"#)
    var writer = JSONWriter()
    writer.beginObject()
    writer.field("b", 1)
    writer.key("a")
    writer.beginArray()
    writer.string("x")
    writer.null()
    writer.endArray()
    writer.endObject()
    #expect(writer.bytes == value.serialized())
    #expect(
      String(decoding: JSONWriter.error("no \"leader\""), as: UTF8.self) == #"{"error":"no \"leader\""}"#)
  }

  /// What JSONEncoder wrote (escaped slashes; raftctl's cluster manifests from before) parses.
  @Test func theParserReadsFoundationsOutput() throws {
    struct Node: Encodable {
      var name = "node01"
      var pid: Int32 = 4242
      var directory = "/tmp/cluster/node01"
    }
    let data = try JSONEncoder().encode(["nodes": [Node()]])
    #expect(String(decoding: data, as: UTF8.self).contains(#"\/tmp"#))
    let value = try JSONParser.parse(Array(data))
    let node = value["nodes"]?[0]
    #expect(node?["directory"]?.stringValue == "/tmp/cluster/node01")
    #expect(node?["pid"]?.intValue == 4242)
    #expect(node?["name"]?.stringValue == "node01")
  }

  @Test func accessorsReadOnlyTheirType() throws {
    let value = try JSONParser.parse(
      Array(#"{"n": 12, "f": 1.5, "neg": -3, "s": "12", "t": true, "z": null, "a": [1]}"#.utf8))
    #expect(value["n"]?.uint64Value == 12)
    #expect(value["n"]?.intValue == 12)
    #expect(value["f"]?.uint64Value == nil)
    #expect(value["neg"]?.uint64Value == nil)
    #expect(value["neg"]?.intValue == -3)
    #expect(value["s"]?.uint64Value == nil)
    #expect(value["s"]?.stringValue == "12")
    #expect(value["t"]?.boolValue == true)
    #expect(value["z"]?.isNull == true)
    #expect(value["a"]?[0]?.intValue == 1)
    #expect(value["a"]?[1] == nil)
    #expect(value["missing"] == nil)
    #expect(value["s"]?["x"] == nil)
  }
}
