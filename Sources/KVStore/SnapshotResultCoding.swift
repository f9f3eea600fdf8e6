import Raft

// Result encoding: tag u8 (1 put, 2 delete, 3 compare-and-set, 4 rejected, 5 cluster version), then
//   put: revision u64 | delete: existed bool, revision u64 |
//   compare-and-set: succeeded bool, has-current bool, [current: u32 length + bytes], revision u64 |
//   rejected: reason (u32 length + bytes)
func writeResult(_ result: KVResult, to writer: inout ByteWriter) {
  switch result {
  case .put(let revision):
    writer.write(UInt8(1))
    writer.write(revision)
  case .delete(let existed, let revision):
    writer.write(UInt8(2))
    writer.write(existed)
    writer.write(revision)
  case .compareAndSet(let succeeded, let current, let revision):
    writer.write(UInt8(3))
    writer.write(succeeded)
    writer.write(current != nil)
    if let current { writer.writeLengthPrefixed(Array(current.utf8)) }
    writer.write(revision)
  case .rejected(let reason):
    writer.write(UInt8(4))
    writer.writeLengthPrefixed(Array(reason.utf8))
  case .clusterVersion(let version):
    // Never recorded (a set-cluster-version carries no idempotency key); encoded to stay total.
    writer.write(UInt8(5))
    writer.write(version)
  case .txn, .compact, .leaseGranted, .leaseRevoked, .leasesCheckpointed, .failed:
    preconditionFailure(
      "multi-version commands take no idempotency key, so their results are never remembered")
  }
}

func readResult(_ reader: inout ByteReader) throws(KVDecodingError) -> KVResult {
  try mapFailure { () throws(ByteReader.Failure) -> KVResult in
    switch try reader.readUInt8() {
    case 1:
      return .put(revision: try reader.readUInt64())
    case 2:
      let existed = try reader.readBool()
      return .delete(existed: existed, revision: try reader.readUInt64())
    case 3:
      let succeeded = try reader.readBool()
      let current = try reader.readBool() ? try readString(&reader) : nil
      return .compareAndSet(succeeded: succeeded, current: current, revision: try reader.readUInt64())
    case 4:
      return .rejected(reason: try readString(&reader))
    case 5:
      return .clusterVersion(try reader.readUInt32())
    case let other:
      throw .invalidValue("result tag \(other)")
    }
  }
}

func readString(_ reader: inout ByteReader) throws(ByteReader.Failure) -> String {
  let bytes = try reader.readLengthPrefixed(limit: SnapshotFormat.maxStringBytes)
  guard let string = String(validating: bytes, as: UTF8.self) else { throw .invalidValue("invalid UTF-8") }
  return string
}

func mapFailure<T>(_ body: () throws(ByteReader.Failure) -> T) throws(KVDecodingError) -> T {
  do {
    return try body()
  } catch {
    switch error {
    case .truncated: throw .truncated
    case .lengthTooLarge(let length, let limit):
      throw .invalidSnapshot("length \(length) above limit \(limit)")
    case .invalidValue(let what): throw .invalidSnapshot(what)
    }
  }
}
