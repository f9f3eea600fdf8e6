/// Tunables of `FileStorage` (and the limits `MemoryStorage` enforces identically).
public struct FileStorageOptions: Sendable {
  /// A WAL segment is closed and a new one started once the next batch would take it past this
  /// size. Smaller segments let compaction free space sooner; larger ones mean fewer files.
  public var segmentSizeBytes: Int = 64 << 20
  /// The largest WAL record payload accepted. Recovery refuses lengths above it, so a corrupt length
  /// field cannot make it allocate gigabytes.
  public var maxRecordBytes: Int = 64 << 20
  /// Snapshots kept on disk. Two, so that if the newest turns out corrupt at startup, the previous
  /// one (and the log after it, which compaction keeps) can still restore the node.
  public var snapshotsRetained: Int = 2
  /// Reserve each new segment's full size up front (`fallocate`), so an append overwrites allocated
  /// blocks and fdatasync need not commit a file-size change on every sync.
  public var preallocateSegments: Bool = true

  public init() {}

  public init(
    segmentSizeBytes: Int = 64 << 20, maxRecordBytes: Int = 64 << 20, snapshotsRetained: Int = 2,
    preallocateSegments: Bool = true
  ) {
    self.segmentSizeBytes = segmentSizeBytes
    self.maxRecordBytes = maxRecordBytes
    self.snapshotsRetained = snapshotsRetained
    self.preallocateSegments = preallocateSegments
  }

  func validate() throws(StorageError) {
    guard segmentSizeBytes >= 4096 else {
      throw .misuse("segmentSizeBytes \(segmentSizeBytes) is below 4096 bytes")
    }
    guard maxRecordBytes >= 64, maxRecordBytes <= Int(UInt32.max) else {
      throw .misuse("maxRecordBytes \(maxRecordBytes) is outside 64...\(UInt32.max)")
    }
    guard snapshotsRetained >= 1 else { throw .misuse("snapshotsRetained must be at least 1") }
  }
}
