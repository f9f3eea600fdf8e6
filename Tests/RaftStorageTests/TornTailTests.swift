import Raft
@_spi(Testing) import RaftStorage
import Testing

/// A crash can interrupt the last write at any byte. Whatever prefix of it reached the disk, recovery
/// must return exactly the records that were complete, cut off the rest, and say so.
@Suite struct TornTailTests {
  struct Prepared {
    let directory: TemporaryDirectory
    let options: FileStorageOptions
    let entries: [LogEntry]
    let finalSegment: String
    let offsets: [Int64]
    let end: Int64
    let original: [UInt8]
  }

  static func prepare(preallocate: Bool) throws -> Prepared {
    let options = FileStorageOptions(segmentSizeBytes: 4096, preallocateSegments: preallocate)
    let harness = try Harness(.file, options: options)
    // Sizes vary (empty data included) so cuts land in every part of a record.
    let entries = (UInt64(1)...150).map { Entries.entry($0, term: 1 + $0 / 30, size: Int($0 * 7 % 61)) }
    try harness.append(entries, inBatchesOf: 7)
    try harness.storage.sync()
    let final = harness.file.walSegments.last!
    #expect(harness.file.walSegments.count >= 2, "the torn segment should follow closed ones")
    let prepared = Prepared(
      directory: harness.directory, options: options, entries: entries, finalSegment: final.path,
      offsets: final.offsets!, end: final.end, original: Disk.read(final.path))
    harness.file.close()
    return prepared
  }

  @Test(arguments: [true, false])
  func everyCutInTheLastRecords(preallocate: Bool) throws {
    let prepared = try Self.prepare(preallocate: preallocate)
    let recordEnds = Array(prepared.offsets.dropFirst()) + [prepared.end]
    let firstInSegment = prepared.entries.count - prepared.offsets.count
    let start = Int(prepared.offsets[prepared.offsets.count - 4])
    var checked = 0
    for cut in start...Int(prepared.end) {
      let complete = recordEnds.filter { $0 <= Int64(cut) }.count
      let expected = Array(prepared.entries[..<(firstInSegment + complete)])
      let lastEnd = Int(recordEnds.last { $0 <= Int64(cut) } ?? Int64(start))
      // Zero bytes (the start of a big-endian length) cannot be told from the unwritten tail.
      let atBoundary = prepared.original[lastEnd..<cut].allSatisfy { $0 == 0 }
      var variants: [(String, [UInt8])] = [("cut at \(cut)", Array(prepared.original[..<cut]))]
      if preallocate {
        // A preallocated file keeps its size: the unwritten part reads as zeros.
        variants.append(
          (
            "zeros from \(cut)",
            Array(prepared.original[..<cut]) + [UInt8](repeating: 0, count: prepared.original.count - cut)
          ))
      }
      for (label, bytes) in variants {
        Disk.write(prepared.finalSegment, bytes)
        let (storage, recovered) = try reopen(prepared.directory.data, options: prepared.options)
        expectLog(recovered.stored.entries, expected, label)
        #expect(recovered.warnings.count == (atBoundary ? 0 : 1), "\(label): \(recovered.warnings)")
        if !atBoundary {
          #expect(recovered.warnings.first?.contains("torn record at offset \(lastEnd)") == true, "\(label)")
        }
        if cut % 9 == 0 {
          // The cut is durable and clean: new records follow the last complete one.
          let next = Entries.entry(UInt64(expected.count + 1), term: 9, size: 13)
          try storage.write(PersistBatch(entries: [next]))
          try storage.sync()
          storage.close()
          let (again, reread) = try reopen(prepared.directory.data, options: prepared.options)
          again.close()
          expectLog(reread.stored.entries, expected + [next], "\(label), appended after")
          #expect(reread.warnings.isEmpty, "\(label): \(reread.warnings)")
        } else {
          storage.close()
        }
        checked += 1
      }
    }
    #expect(checked >= 100)
  }

  /// A crash while a new segment was being created leaves it empty or with part of its header.
  @Test(arguments: [0, 1, 7, 19, 20])
  func anIncompleteNewSegmentIsRemoved(length: Int) throws {
    let prepared = try Self.prepare(preallocate: true)
    // As if the previous segment had just been closed and this one not yet written.
    let header = Array(prepared.original[..<20])
    let torn = length == 20 ? [UInt8](repeating: 0, count: 4096) : Array(header[..<length])
    Disk.write(prepared.finalSegment, torn)
    let (storage, recovered) = try reopen(prepared.directory.data, options: prepared.options)
    defer { storage.close() }
    let firstInSegment = prepared.entries.count - prepared.offsets.count
    expectLog(recovered.stored.entries, Array(prepared.entries[..<firstInSegment]))
    #expect(recovered.warnings.contains { $0.contains("creation was interrupted") })
    #expect(!Disk.exists(prepared.finalSegment))
  }
}
