/// Majority arithmetic over small sets of voters, without heap allocation.
enum Quorum {
  /// The largest value that at least `quorum` of `values` reach: with values sorted descending,
  /// the one at position `quorum - 1`. Used for the commit index (from match indexes) and for the
  /// confirmed read round (from acknowledged rounds).
  static func agreedValue(_ values: some Collection<UInt64>, quorum: Int) -> UInt64 {
    precondition(quorum >= 1 && quorum <= values.count, "quorum \(quorum) of \(values.count) values")
    return withUnsafeTemporaryAllocation(of: UInt64.self, capacity: values.count) { buffer in
      var sorted = buffer
      _ = sorted.initialize(fromContentsOf: values)
      sorted.sort(by: >)
      return sorted[quorum - 1]
    }
  }
}
