extension MVCCStore {
  // MARK: - Leases

  /// Creates lease `id` with `ttl` seconds. The proposer chooses the id (etcd's leader picks one
  /// when the client leaves it 0) so that every replica applies the same one.
  public mutating func grant(lease id: Int64, ttl: Int64) throws(MVCCError) {
    guard id > 0 else { throw .invalidLeaseID }
    guard leases[Self.leaseKey(id)] == nil else { throw .leaseExists }
    leases.insert(LeaseRecord(grantedTTL: ttl), forKey: Self.leaseKey(id))
  }

  /// Deletes lease `id` and, at one new revision (if it has any), every key attached to it, in key
  /// order. This is how a lease expires too: the leader proposes the revoke, so every replica
  /// deletes the same keys at the same revision. Returns how many keys were deleted.
  @discardableResult
  public mutating func revoke(lease id: Int64) throws(MVCCError) -> Int64 {
    guard let keys = lease(id)?.keys else { throw .leaseNotFound }
    let main = revision + 1
    var sub: Int64 = 0
    var deleted: Int64 = 0
    for key in keys {
      deleted += write(DeleteRangeRequest(range: KeyRange(key: key)), main: main, sub: &sub).deleted
    }
    leases.remove(Self.leaseKey(id))
    finishWrite(main: main, sub: sub)
    return deleted
  }

  /// Records the remaining TTL the leader computed for lease `id`.
  public mutating func checkpoint(lease id: Int64, remainingTTL: Int64) throws(MVCCError) {
    guard var lease = leases[Self.leaseKey(id)] else { throw .leaseNotFound }
    lease.checkpointedTTL = remainingTTL
    leases.insert(lease, forKey: Self.leaseKey(id))
  }

  /// Lease `id` with its keys, or nil.
  public func lease(_ id: Int64) -> Lease? {
    guard let record = leases[Self.leaseKey(id)] else { return nil }
    var keys: [[UInt8]] = []
    record.keys.forEach(from: [], below: nil) { key, _ in
      keys.append(key)
      return true
    }
    return Lease(id: id, grantedTTL: record.grantedTTL, checkpointedTTL: record.checkpointedTTL, keys: keys)
  }

  /// Every lease id, ascending.
  public var leaseIDs: [Int64] {
    var ids: [Int64] = []
    leases.forEach(from: [], below: nil) { key, _ in
      ids.append(key.reduce(0) { $0 << 8 | Int64($1) })
      return true
    }
    return ids
  }

  static func leaseKey(_ id: Int64) -> [UInt8] {
    stride(from: 56, through: 0, by: -8).map { UInt8(truncatingIfNeeded: id >> $0) }
  }

  mutating func attach(_ key: [UInt8], to lease: Int64) {
    guard var record = leases[Self.leaseKey(lease)] else { return }
    record.keys.insert(true, forKey: key)
    leases.insert(record, forKey: Self.leaseKey(lease))
  }

  mutating func detach(_ key: [UInt8], from lease: Int64) {
    guard lease != 0, var record = leases[Self.leaseKey(lease)], record.keys.remove(key) else { return }
    leases.insert(record, forKey: Self.leaseKey(lease))
  }
}
