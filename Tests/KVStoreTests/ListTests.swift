import Testing

@testable import KVStore

@Suite struct ListTests {
  static func machine() -> KVStateMachine {
    let driver = Driver()
    let keys = ["dir/b", "dir/a", "dir/c/1", "dir", "dis", "di", "other/x", "dir/\u{E9}", "dir/z", "dir/B"]
    for key in keys { driver.apply(put(key, "value of \(key)")) }
    driver.apply(.delete(key: "dir/z"))
    return driver.machine
  }

  struct Case: Sendable, CustomTestStringConvertible {
    var prefix: String
    var limit: Int
    var keys: [String]
    var testDescription: String { "\(prefix)*, limit \(limit)" }
  }

  static let cases: [Case] = [
    // Byte order: "B" < "a" < "c" < "é" (0xC3 0xA9).
    Case(prefix: "dir/", limit: 100, keys: ["dir/B", "dir/a", "dir/b", "dir/c/1", "dir/\u{E9}"]),
    Case(prefix: "dir/", limit: 2, keys: ["dir/B", "dir/a"]),
    Case(prefix: "dir/", limit: 0, keys: []),
    Case(prefix: "dir/", limit: -1, keys: []),
    Case(prefix: "di", limit: 3, keys: ["di", "dir", "dir/B"]),
    Case(prefix: "dir/c", limit: 10, keys: ["dir/c/1"]),
    Case(prefix: "dir/z", limit: 10, keys: []),
    Case(prefix: "nothing", limit: 10, keys: []),
    Case(
      prefix: "", limit: 100,
      keys: ["di", "dir", "dir/B", "dir/a", "dir/b", "dir/c/1", "dir/\u{E9}", "dis", "other/x"]),
    Case(prefix: "", limit: 1, keys: ["di"]),
  ]

  @Test(arguments: cases)
  func listsInByteOrder(_ testCase: Case) {
    let listed = Self.machine().list(prefix: testCase.prefix, limit: testCase.limit)
    #expect(listed.map(\.key) == testCase.keys)
    for (key, record) in listed { #expect(record.value == "value of \(key)") }
  }

  @Test func boundedListingOfManyKeysPicksTheSmallest() {
    let driver = Driver()
    for i in (0..<2_000).reversed() { driver.apply(put("k/\(1_000_000 + i * 7 % 2_000)", "v")) }
    let listed = driver.machine.list(prefix: "k/", limit: 10)
    #expect(listed.map(\.key) == (0..<10).map { "k/\(1_000_000 + $0)" })
    let all = driver.machine.list(prefix: "k/", limit: Int.max)
    #expect(all.count == 2_000)
    #expect(
      all.map(\.key) == all.map(\.key).sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
  }
}
