import Linearizability
import Testing

@Suite struct CodingTests {
  /// Strings compared scalar for scalar: Swift's `==` would accept a normalization.
  static func sameScalars(_ left: History, _ right: History) -> Bool {
    left == right && left.encoded().unicodeScalars.elementsEqual(right.encoded().unicodeScalars)
  }

  @Test func roundTripsAwkwardStrings() throws {
    let awkward = [
      "", "absent", "with space", "quote\"inside", "back\\slash", "new\nline", "cr\r\nlf", "tab\t",
      "nul\u{0}bell\u{7}del\u{7F}", "caf\u{E9}", "cafe\u{301}", "\u{1F600}/ключ", "key=value", "#hash",
    ]
    var operations: [Operation] = []
    for (index, text) in awkward.enumerated() {
      let base = UInt64(index) * 10
      operations.append(op(index, .write(text), base, base + 5, ok, key: text))
      operations.append(op(index, .read, base, base + 5, saw(text), key: text))
      operations.append(op(index, .read, base, base + 5, saw(nil), key: text))
      operations.append(op(index, .cas(expected: text, new: text), base, nil, .unknown, key: text))
      operations.append(op(index, .cas(expected: nil, new: text), base, base + 9, notSwapped, key: text))
      operations.append(op(index, .delete, base, base + 1, .failed, key: text))
    }
    operations.append(op(-3, .read, 0, UInt64.max, swapped))  // malformed, but must survive encoding
    let original = history(operations)
    let text = original.encoded()
    let decoded = try History(decoding: text)
    #expect(Self.sameScalars(original, decoded))
    #expect(text.hasPrefix("raftdb-history v1\n"))
  }

  @Test func roundTripsGeneratedHistories() throws {
    var rng = SeededGenerator(seed: 99)
    let generator = HistoryGenerator(
      processes: 5, keys: ["a", "b", "c"], operations: 200, values: ["1", "2"], unknownProbability: 0.1,
      failedProbability: 0.1, perturbation: 0.5, maxGap: 1_000_000, maxDuration: 5_000_000,
      unknownReach: 50_000_000)
    for _ in 0..<20 {
      let original = generator.generate(using: &rng).history
      #expect(Self.sameScalars(original, try History(decoding: original.encoded())))
    }
  }

  @Test func ignoresTextBeforeTheHeader() throws {
    let original = history([op(1, .write("a"), 0, 10, ok), op(2, .read, 20, 30, saw("b"))])
    let result = LinearizabilityChecker().check(original)
    guard case .notLinearizable(_, let minimal, let explanation) = result else {
      Issue.record("expected a violation")
      return
    }
    // What `raftctl verify` saves: the explanation, then the shrunk history.
    let report = explanation + "\n" + History(minimal).encoded()
    #expect(try History(decoding: report) == History(minimal))
  }

  @Test func acceptsCommentsBlankLinesAndCRLF() throws {
    let text =
      "# saved by the harness\r\n\r\nraftdb-history v1\r\n"
      + "op id=1 process=2 key=\"k\" call=write value=\"a\" invoked=100 completed=250 outcome=ok\r\n"
      + "  # indented comment\n"
      + "op   id=2 process=1 key=\"k\" call=read invoked=120 completed=300 outcome=ok result=absent\n"
    let decoded = try History(decoding: text)
    #expect(
      decoded
        == History([
          Operation(
            id: 1, process: 2, key: "k", call: .write("a"), invokedAt: 100, completedAt: 250, outcome: ok),
          Operation(
            id: 2, process: 1, key: "k", call: .read, invokedAt: 120, completedAt: 300,
            outcome: saw(nil)),
        ]))
  }

  @Test(arguments: [
    ("op id=1", 1, "header"),
    ("raftdb-history v2\nop id=1", 2, "header"),
    (
      "raftdb-history v1\nop id=1 process=1 key=\"k\" call=read invoked=1 outcome=ok result=\"a", 2,
      "unterminated"
    ),
    ("raftdb-history v1\n\nop id=1 process=1 key=\"k\" call=read outcome=unknown", 3, "invoked"),
    ("raftdb-history v1\nop id=x process=1 key=\"k\" call=read invoked=1 outcome=unknown", 2, "number"),
    ("raftdb-history v1\nop id=1 process=1 key=\"k\" call=jump invoked=1 outcome=unknown", 2, "call"),
    (
      "raftdb-history v1\nop id=1 process=1 key=\"k\" call=read invoked=1 outcome=unknown extra=1", 2, "extra"
    ),
    ("raftdb-history v1\nop id=1 process=1 key=k call=read invoked=1 outcome=unknown", 2, "key"),
    (
      "raftdb-history v1\nop id=1 process=1 key=\"k\" call=cas new=\"a\" invoked=1 outcome=unknown", 2,
      "expected"
    ),
    ("raftdb-history v1\nop id=1 id=1 process=1 key=\"k\" call=read invoked=1 outcome=unknown", 2, "twice"),
    ("", 1, "header"),
  ])
  func rejectsMalformedInput(text: String, line: Int, mention: String) {
    do {
      _ = try History(decoding: text)
      Issue.record("decoded malformed input")
    } catch {
      #expect(error.line == line)
      #expect(error.message.contains(mention), "\(error)")
    }
  }
}
