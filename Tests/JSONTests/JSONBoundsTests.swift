import JSON
import Testing

/// The parser's bounds: linear time whatever the input, and a limit on values.
@Suite struct JSONBoundsTests {
  static func object(members: Int, duplicateLast: Bool = false) -> [UInt8] {
    var text = "{"
    text.reserveCapacity(members * 10)
    for k in 0..<members {
      if k > 0 { text += "," }
      text += "\"k\(duplicateLast && k == members - 1 ? 0 : k)\":\"\""
    }
    text += "}"
    return Array(text.utf8)
  }

  /// 1,000,000 tiny members (what an 8 MiB body can hold) are refused at the value limit, having
  /// read only the first few thousand.
  @Test func aMillionTinyMembersAreRefused() {
    #expect(throws: JSONError.self) { _ = try JSONParser.parse(Self.object(members: 1_000_000)) }
    do {
      _ = try JSONParser.parse(Self.object(members: 1_000_000))
    } catch {
      #expect(error.description.contains("more than \(JSONParser.defaultMaxValues) values"), "\(error)")
    }
  }

  /// Up to the limit, distinct keys parse and a duplicate is still found, in time linear in the
  /// input (each key is checked against a set, not against every earlier key).
  @Test func duplicatesAreFoundAmongManyMembers() throws {
    let count = JSONParser.defaultMaxValues / 2 - 1
    guard case .object(let members) = try JSONParser.parse(Self.object(members: count)) else {
      Issue.record("not an object")
      return
    }
    #expect(members.count == count)
    #expect(throws: JSONError.self) {
      _ = try JSONParser.parse(Self.object(members: count, duplicateLast: true))
    }
    #expect(throws: JSONError.self) { _ = try JSONParser.parse(Array(#"{"a":1,"b":2,"a":3}"#.utf8)) }
  }

  /// The bound is exact: an object holds at most `defaultMaxValues - 1` members (the object itself
  /// is a value, its keys are not), an array as many elements.
  @Test func theValueBoundIsExact() throws {
    let most = JSONParser.defaultMaxValues - 1
    guard case .object(let members) = try JSONParser.parse(Self.object(members: most)) else {
      Issue.record("not an object")
      return
    }
    #expect(members.count == most)
    #expect(throws: JSONError.self) { _ = try JSONParser.parse(Self.object(members: most + 1)) }
    let array = { (count: Int) in
      Array(("[" + Array(repeating: "0", count: count).joined(separator: ",") + "]").utf8)
    }
    #expect(try JSONParser.parse(array(most)).arrayValue?.count == most)
    #expect(throws: JSONError.self) { _ = try JSONParser.parse(array(most + 1)) }
  }

  @Test func nestingIsBounded() {
    let deep = Array(String(repeating: "[", count: 17).utf8) + Array(String(repeating: "]", count: 17).utf8)
    #expect(throws: JSONError.self) { _ = try JSONParser.parse(deep) }
    let ok = Array(String(repeating: "[", count: 16).utf8) + Array(String(repeating: "]", count: 16).utf8)
    #expect((try? JSONParser.parse(ok)) != nil)
  }
}
