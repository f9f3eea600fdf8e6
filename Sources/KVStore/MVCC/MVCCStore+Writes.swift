extension MVCCStore {
  // MARK: - Writes

  /// Applies a transaction: its compares decide the branch, whose operations apply in order at
  /// one new revision (none if the branch changes nothing), and later operations read what earlier
  /// ones wrote. Throws, changing nothing, on a duplicate key, an empty key, an `ignoreValue` or
  /// `ignoreLease` on a missing key, a lease that does not exist, or a range's revision that is
  /// compacted or in the future.
  ///
  /// Every error is found by `plan` before the first write, against the store as it is: no put's
  /// key can be touched by an earlier operation of the same transaction (`checkIntervals`), and
  /// leases do not change within one. So the writes can go in place, with nothing to undo.
  public mutating func txn(_ request: TxnRequest) throws(MVCCError) -> TxnResponse {
    try Self.checkIntervals(request.success)
    try Self.checkIntervals(request.failure)
    let plan = try plan(request)
    var sub: Int64 = 0
    let main = revision + 1
    let response = perform(request, plan, main: main, sub: &sub)
    finishWrite(main: main, sub: sub)
    return response
  }

  public mutating func put(_ request: PutRequest) throws(MVCCError) -> PutResponse {
    try check(request)
    var sub: Int64 = 0
    let response = write(request, main: revision + 1, sub: &sub)
    finishWrite(main: revision + 1, sub: sub)
    return response
  }

  public mutating func deleteRange(_ request: DeleteRangeRequest) throws(MVCCError) -> DeleteRangeResponse {
    guard !request.range.key.isEmpty else { throw .emptyKey }
    var sub: Int64 = 0
    let response = write(request, main: revision + 1, sub: &sub)
    finishWrite(main: revision + 1, sub: sub)
    return response
  }

  /// The branch each level of a transaction takes, chosen before anything is written (etcd's
  /// `compareToPath`: every compare, nested ones included, reads the store before the
  /// transaction), with one plan per nested transaction of the chosen branch, in order.
  struct TxnPlan {
    var succeeded: Bool
    var nested: [TxnPlan]
  }

  /// Chooses the branches and finds every error the chosen operations would meet.
  func plan(_ request: TxnRequest) throws(MVCCError) -> TxnPlan {
    let succeeded = request.compare.allSatisfy(evaluate)
    var nested: [TxnPlan] = []
    for operation in succeeded ? request.success : request.failure {
      switch operation {
      case .range(let range):
        if range.revision > 0 {
          guard range.revision <= revision else { throw .futureRevision }
          guard range.revision >= compactRevision else { throw .compacted(compactRevision: compactRevision) }
        }
      case .put(let put):
        try check(put)
      case .deleteRange(let delete):
        guard !delete.range.key.isEmpty else { throw .emptyKey }
      case .txn(let inner):
        nested.append(try plan(inner))
      }
    }
    return TxnPlan(succeeded: succeeded, nested: nested)
  }

  /// Why a put cannot apply to the store as it is, if it cannot.
  func check(_ put: PutRequest) throws(MVCCError) {
    guard !put.key.isEmpty else { throw .emptyKey }
    let current = index[put.key].flatMap { $0.value == nil ? nil : $0 }
    if (put.ignoreValue || put.ignoreLease) && current == nil { throw .keyNotFound }
    let lease = put.ignoreLease ? current?.lease ?? 0 : put.lease
    if lease != 0 && leases[Self.leaseKey(lease)] == nil { throw .leaseNotFound }
  }

  /// Carries out a planned transaction at revision `main`.
  mutating func perform(_ request: TxnRequest, _ plan: TxnPlan, main: Int64, sub: inout Int64) -> TxnResponse
  {
    var responses: [ResponseOp] = []
    var nested = plan.nested.makeIterator()
    for operation in plan.succeeded ? request.success : request.failure {
      switch operation {
      case .range(let range):
        // No revision: what the transaction has written so far is read too (etcd's
        // storeTxnWrite.Range).
        let at = range.revision > 0 ? range.revision : (sub > 0 ? main : main - 1)
        responses.append(.range(rangeUnchecked(range, at: at)))
      case .put(let put):
        responses.append(.put(write(put, main: main, sub: &sub)))
      case .deleteRange(let delete):
        responses.append(.deleteRange(write(delete, main: main, sub: &sub)))
      case .txn(let inner):
        guard let innerPlan = nested.next() else { preconditionFailure("a plan per nested transaction") }
        responses.append(.txn(perform(inner, innerPlan, main: main, sub: &sub)))
      }
    }
    return TxnResponse(succeeded: plan.succeeded, responses: responses)
  }

  /// Puts one key as change `sub` of revision `main` (then advances `sub`). The caller has checked
  /// the request (`check`): this is the building block of transactions, revokes and the state
  /// machine's plain puts.
  mutating func write(_ request: PutRequest, main: Int64, sub: inout Int64) -> PutResponse {
    let newest = index[request.key]
    let current = newest.flatMap { $0.value == nil ? nil : $0 }
    let previous = request.prevKV ? current.map { Self.keyValue(request.key, $0) } : nil
    let lease = request.ignoreLease ? current?.lease ?? 0 : request.lease
    if let old = current?.lease, old != lease { detach(request.key, from: old) }
    if lease != 0 && current?.lease != lease { attach(request.key, to: lease) }
    let revision = Revision(main: main, sub: sub)
    sub += 1
    let value = request.ignoreValue ? current?.value ?? [] : request.value
    let change = Change(
      revision: revision, value: value, createRevision: current?.createRevision ?? main,
      version: (current?.version ?? 0) + 1, lease: lease, older: newest)
    index.insert(change, forKey: request.key)
    changesByRevision.insert(request.key, forKey: revision.indexKey)
    if current == nil { liveKeyCount += 1 }
    heldBytes += value.count + (newest == nil ? request.key.count : 0)
    liveBytes += value.count - (current?.value?.count ?? -request.key.count)
    return PutResponse(prevKV: previous)
  }

  /// Deletes the keys of a range that exist, as changes of revision `main`.
  mutating func write(_ request: DeleteRangeRequest, main: Int64, sub: inout Int64) -> DeleteRangeResponse {
    var doomed: [([UInt8], Change)] = []
    if request.range.isSingleKey {
      if let newest = index[request.range.key], newest.value != nil {
        doomed.append((request.range.key, newest))
      }
    } else {
      index.forEach(from: request.range.lowerBound, below: request.range.upperBound) { key, newest in
        if newest.value != nil { doomed.append((key, newest)) }
        return true
      }
    }
    var previous: [MVCCKeyValue] = []
    for (key, newest) in doomed {
      if request.prevKV { previous.append(Self.keyValue(key, newest)) }
      let tombstone = Change(
        revision: Revision(main: main, sub: sub), value: nil, createRevision: 0, version: 0, lease: 0,
        older: newest)
      sub += 1
      index.insert(tombstone, forKey: key)
      changesByRevision.insert(key, forKey: tombstone.revision.indexKey)
      liveKeyCount -= 1
      liveBytes -= key.count + (newest.value?.count ?? 0)
      detach(key, from: newest.lease)
    }
    return DeleteRangeResponse(deleted: Int64(doomed.count), prevKVs: previous)
  }

  /// Ends a write made of `write` calls at `main`: the store takes that revision if anything
  /// changed.
  mutating func finishWrite(main: Int64, sub: Int64) {
    if sub > 0 { revision = main }
  }

  func evaluate(_ compare: Compare) -> Bool {
    let kvs = rangeUnchecked(RangeRequest(range: compare.range), at: revision).kvs
    guard !kvs.isEmpty else {
      if case .value = compare.target { return false }
      return Self.holds(
        compare,
        for: MVCCKeyValue(
          key: compare.range.key, createRevision: 0, modRevision: 0, version: 0, value: [], lease: 0))
    }
    return kvs.allSatisfy { Self.holds(compare, for: $0) }
  }

  static func holds(_ compare: Compare, for kv: MVCCKeyValue) -> Bool {
    let order: Int =
      switch compare.target {
      case .value(let value): compareKeys(kv.value, value)
      case .version(let version): kv.version < version ? -1 : (kv.version > version ? 1 : 0)
      case .create(let create): kv.createRevision < create ? -1 : (kv.createRevision > create ? 1 : 0)
      case .mod(let mod): kv.modRevision < mod ? -1 : (kv.modRevision > mod ? 1 : 0)
      case .lease(let lease): kv.lease < lease ? -1 : (kv.lease > lease ? 1 : 0)
      }
    switch compare.result {
    case .equal: return order == 0
    case .notEqual: return order != 0
    case .less: return order < 0
    case .greater: return order > 0
    }
  }

  /// etcd's checkIntervals: within one branch no key is put twice, and no put falls in a range the
  /// branch deletes; a nested transaction's then and else branches may put the same key (only one
  /// of them runs).
  @discardableResult
  static func checkIntervals(_ operations: [RequestOp]) throws(MVCCError) -> (
    puts: Set<[UInt8]>, deletes: [KeyRange]
  ) {
    var deletes: [KeyRange] = []
    for case .deleteRange(let delete) in operations { deletes.append(delete.range) }
    func deleted(_ key: [UInt8]) -> Bool { deletes.contains { $0.contains(key) } }
    var puts = Set<[UInt8]>()
    for case .txn(let nested) in operations {
      let then = try checkIntervals(nested.success)
      let otherwise = try checkIntervals(nested.failure)
      for key in then.puts {
        guard !puts.contains(key), !deleted(key) else { throw .duplicateKey }
        puts.insert(key)
      }
      for key in otherwise.puts {
        guard !puts.contains(key) || then.puts.contains(key), !deleted(key) else { throw .duplicateKey }
        puts.insert(key)
      }
      deletes += then.deletes + otherwise.deletes
    }
    for case .put(let put) in operations {
      guard !puts.contains(put.key), !deleted(put.key) else { throw .duplicateKey }
      puts.insert(put.key)
    }
    return (puts, deletes)
  }
}
