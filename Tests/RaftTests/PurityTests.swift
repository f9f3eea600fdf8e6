import Foundation
import Testing

/// A rule for the core's source: identifiers that would let it reach I/O, a clock or system
/// randomness (which would break deterministic replay from a seed).
struct ForbiddenUse: Sendable, CustomTestStringConvertible {
  var name: String
  /// Whether an identifier (and the first non-blank character after it) breaks the rule.
  var matches: @Sendable (_ identifier: String, _ next: Character?) -> Bool
  /// Files the rule does not apply to.
  var exempt: Set<String> = []
  var testDescription: String { name }

  static func identifier(_ word: String) -> ForbiddenUse {
    ForbiddenUse(name: word) { identifier, _ in identifier == word }
  }

  static func call(_ word: String, exempt: Set<String> = []) -> ForbiddenUse {
    ForbiddenUse(
      name: "\(word)(", matches: { identifier, next in identifier == word && next == "(" }, exempt: exempt)
  }

  static let all: [ForbiddenUse] = [
    ForbiddenUse(name: "import (any)") { identifier, _ in identifier == "import" },
    identifier("Foundation"), identifier("FoundationEssentials"), identifier("Glibc"), identifier("Darwin"),
    identifier("Musl"), identifier("WinSDK"),
    ForbiddenUse(name: "Dispatch*") { identifier, _ in identifier.hasPrefix("Dispatch") },
    identifier("Date"), identifier("DispatchTime"), identifier("ContinuousClock"),
    identifier("SuspendingClock"),
    identifier("SystemRandomNumberGenerator"), identifier("arc4random"), identifier("arc4random_uniform"),
    call("random", exempt: ["SplitMix64.swift"]), identifier("Thread"), identifier("clock_gettime"),
    identifier("gettimeofday"), identifier("FileManager"), identifier("FileHandle"), identifier("fopen"),
  ]
}

/// Splits Swift source into identifiers (with the next non-blank character), skipping comments.
/// String literals are scanned like code, so interpolations cannot hide a call.
func identifiersInSwiftCode(_ source: String) -> [(identifier: String, next: Character?)] {
  let characters = Array(source)
  var code: [Character] = []
  var k = 0
  var blockDepth = 0
  while k < characters.count {
    let c = characters[k]
    let n: Character? = k + 1 < characters.count ? characters[k + 1] : nil
    if blockDepth > 0 {
      if c == "/" && n == "*" {
        blockDepth += 1
        k += 2
      } else if c == "*" && n == "/" {
        blockDepth -= 1
        k += 2
        code.append(" ")
      } else {
        k += 1
      }
    } else if c == "/" && n == "*" {
      blockDepth = 1
      k += 2
    } else if c == "/" && n == "/" {
      while k < characters.count && characters[k] != "\n" { k += 1 }
    } else if c == "\"" {
      // Copy the literal, but do not let `//` inside it start a comment.
      code.append(c)
      k += 1
      while k < characters.count && characters[k] != "\"" && characters[k] != "\n" {
        if characters[k] == "\\" && k + 1 < characters.count {
          code.append(characters[k])
          k += 1
        }
        code.append(characters[k])
        k += 1
      }
      if k < characters.count && characters[k] == "\"" {
        code.append("\"")
        k += 1
      }
    } else {
      code.append(c)
      k += 1
    }
  }

  func isIdentifierCharacter(_ c: Character) -> Bool { c == "_" || c.isLetter || c.isNumber }
  var result: [(String, Character?)] = []
  var i = 0
  while i < code.count {
    guard isIdentifierCharacter(code[i]) else {
      i += 1
      continue
    }
    var j = i
    while j < code.count && isIdentifierCharacter(code[j]) { j += 1 }
    var m = j
    while m < code.count && code[m].isWhitespace { m += 1 }
    result.append((String(code[i..<j]), m < code.count ? code[m] : nil))
    i = j
  }
  return result
}

func violations(of rule: ForbiddenUse, in source: String, file: String) -> [String] {
  guard !rule.exempt.contains(file) else { return [] }
  return identifiersInSwiftCode(source).filter { rule.matches($0.identifier, $0.next) }.map {
    "\(file): \($0.identifier)"
  }
}

@Suite struct PurityTests {
  static var coreSources: [(name: String, text: String)] {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent()
    let directory = root.appendingPathComponent("Sources/Raft")
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
    return names.filter { $0.hasSuffix(".swift") }.sorted().compactMap { name in
      (try? String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)).map { (name, $0) }
    }
  }

  /// The core must replay deterministically from a seed: no I/O, no clock, no system randomness, no imports.
  @Test(arguments: ForbiddenUse.all)
  func coreSourcesUseNoForbiddenAPIs(_ rule: ForbiddenUse) throws {
    let sources = Self.coreSources
    try #require(sources.contains { $0.name == "RaftNode.swift" }, "Sources/Raft not found from \(#filePath)")
    try #require(sources.count >= 15)
    let found = sources.flatMap { violations(of: rule, in: $0.text, file: $0.name) }
    #expect(found.isEmpty, "\(found)")
  }

  /// The scanner itself must catch real uses and ignore look-alikes (else the rule above proves nothing).
  @Test(
    arguments: [
      ("import Foundation\n", "import (any)", true),
      ("@preconcurrency import Glibc\n", "Glibc", true),
      ("let t = Date()\n", "Date", true),
      ("let q = DispatchQueue.main\n", "Dispatch*", true),
      ("let x = Int.random(in: 0..<9)\n", "random(", true),
      ("Thread.sleep(forTimeInterval: 1)\n", "Thread", true),
      ("let s = \"\\(Date())\"\n", "Date", true),
      ("func isUpToDate(_ p: Int) -> Bool { true }\n", "Date", false),
      ("/// Dispatches a message\nlet a = 1\n", "Dispatch*", false),
      ("// import Foundation\n/* Thread /* nested */ Date() */ let b = 2\n", "import (any)", false),
      ("let url = \"http://x\" // Thread\n", "Thread", false),
      ("var random: SplitMix64\nlet v = random.next()\n", "random(", false),
    ] as [(String, String, Bool)])
  func scannerFindsUsesAndIgnoresLookAlikes(source: String, ruleName: String, flagged: Bool) throws {
    let rule = try #require(ForbiddenUse.all.first { $0.name == ruleName })
    #expect(!violations(of: rule, in: source, file: "Example.swift").isEmpty == flagged)
  }
}
