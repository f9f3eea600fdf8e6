import Raft

/// What recovery found in `DATA/wal`, before deciding anything or changing any file.
struct WALScan {
  /// Every segment, in index order; those holding entries at or above the snapshot index are read.
  var segments: [WALSegment] = []
  /// Entries above the snapshot index.
  var entries: [LogEntry] = []
  /// The term of the entry at the snapshot index, if the log holds it.
  var termAtSnapshot: UInt64?
  /// A torn record at the end of the final segment, to be cut off.
  var torn: (path: String, offset: Int64, reason: String)?
  /// Final segments whose creation a crash interrupted (no intact header and no record made it to
  /// disk).
  var incomplete: [String] = []
  var temporaryFiles: [String] = []
  /// Files whose names are not segments': left alone and reported.
  var strayFiles: [String] = []

  var firstIndex: UInt64? { segments.first?.firstIndex }

  /// The index of the last record (one below the final segment's first index when it is empty).
  var lastIndex: UInt64? { segments.last.map { $0.firstIndex + UInt64($0.recordCount) - 1 } }
}

extension WriteAheadLog {
  /// Reads the WAL without changing it. Segments that hold only entries below `keepAbove` (the
  /// recovered snapshot's index) have just their header checked: the node needs none of their entries.
  static func scan(
    directory: String, fileSystem fs: any StorageFileSystem, options: FileStorageOptions, keepAbove: UInt64
  ) throws(StorageError) -> WALScan {
    var scan = WALScan()
    var named: [(first: UInt64, path: String)] = []
    for name in try fs.listDirectory(directory) {
      let path = directory + "/" + name
      if name.contains(DataLayout.temporaryMarker) {
        scan.temporaryFiles.append(path)
      } else if let first = DataLayout.parseSegmentName(name) {
        named.append((first, path))
      } else {
        scan.strayFiles.append(path)
      }
    }
    named.sort { $0.first < $1.first }

    // A crash while a segment was being created can leave it without its header. Only the final
    // segment can be in that state (the next is created only after the previous one is complete).
    var finalBytes: [UInt8] = []
    while let last = named.last {
      finalBytes = try readWhole(last.path, fileSystem: fs)
      let header = try finalBytes.withBytes { (bytes) throws(StorageError) in
        try WALFormat.checkSegmentHeader(bytes, path: last.path)
      }
      // Records are appended only after a segment's creation was synced, so a final segment whose
      // header did not survive, and which holds no valid record, was never used: a crash interrupted
      // its creation (the directory entry reached the disk, its header did not, or only part of it
      // did). A damaged header followed by a valid record is corruption, and the checks below say so.
      let unfinished: Bool
      switch header {
      case .valid: unfinished = false
      case .incomplete, .invalid:
        let records = finalBytes.withUnsafeBytes { bytes in
          (try? SegmentScanner.scan(
            bytes, path: last.path, firstIndex: last.first, isFinal: true, previousTerm: nil, keepAbove: .max,
            maxRecordBytes: options.maxRecordBytes))?.offsets.count ?? 0
        }
        unfinished = records == 0
      }
      guard unfinished else { break }
      scan.incomplete.append(last.path)
      named.removeLast()
    }

    var previous: (lastIndex: UInt64, lastTerm: UInt64?)?
    for (k, segment) in named.enumerated() {
      let isFinal = k == named.count - 1
      let skip = !isFinal && named[k + 1].first <= keepAbove
      let bytes: [UInt8]
      if isFinal {
        bytes = finalBytes
      } else if skip {
        let file = try fs.open(segment.path, mode: .readOnly)
        defer { file.close() }
        bytes = try file.read(count: WALFormat.segmentHeaderSize, at: 0)
      } else {
        bytes = try readWhole(segment.path, fileSystem: fs)
      }
      let scanned = try bytes.withBytes { (buffer) throws(StorageError) -> SegmentScan? in
        try checkHeader(buffer, path: segment.path, nameIndex: segment.first)
        if skip { return nil }
        if let previous, segment.first != previous.lastIndex + 1 {
          throw .corruption(
            file: segment.path, offset: 0,
            reason:
              "segment starts at entry \(segment.first) but the previous segment ends at \(previous.lastIndex)"
          )
        }
        return try SegmentScanner.scan(
          buffer, path: segment.path, firstIndex: segment.first, isFinal: isFinal,
          previousTerm: previous?.lastTerm, keepAbove: keepAbove, maxRecordBytes: options.maxRecordBytes)
      }
      guard let scanned else {
        scan.segments.append(WALSegment(firstIndex: segment.first, path: segment.path, offsets: nil, end: 0))
        previous = nil
        continue
      }
      scan.segments.append(
        WALSegment(firstIndex: segment.first, path: segment.path, offsets: scanned.offsets, end: scanned.end))
      scan.entries.append(contentsOf: scanned.entries)
      if let term = scanned.termAtSnapshot { scan.termAtSnapshot = term }
      if let torn = scanned.torn { scan.torn = (segment.path, torn.offset, torn.reason) }
      previous = (scanned.lastIndex, scanned.lastTerm ?? previous?.lastTerm)
    }
    return scan
  }

  private static func checkHeader(
    _ bytes: UnsafeRawBufferPointer, path: String, nameIndex: UInt64
  ) throws(StorageError) {
    switch try WALFormat.checkSegmentHeader(bytes, path: path) {
    case .valid(let first):
      guard first == nameIndex else {
        throw .corruption(
          file: path, offset: 8,
          reason: "segment header says first index \(first) but the file name says \(nameIndex)")
      }
      guard first > 0 else { throw .corruption(file: path, offset: 8, reason: "segment first index is 0") }
    case .incomplete:
      throw .corruption(
        file: path, offset: 0, reason: "segment header is missing or zeroed but the segment holds data")
    case .invalid(let reason):
      throw .corruption(file: path, offset: 0, reason: reason)
    }
  }

  private static func readWhole(_ path: String, fileSystem fs: any StorageFileSystem) throws(StorageError)
    -> [UInt8]
  {
    let file = try fs.open(path, mode: .readOnly)
    defer { file.close() }
    return try file.readAll()
  }

  /// Continues the scanned log: removes what a crash left incomplete (reporting it), cuts off a torn
  /// tail durably, and opens the final segment for appending. Also syncs that segment, because after a
  /// process crash what recovery just read may exist only in the page cache, and the node is about
  /// to treat it as durable.
  static func open(
    _ scan: WALScan, directory: String, fileSystem fs: any StorageFileSystem, options: FileStorageOptions
  ) throws(StorageError) -> (wal: WriteAheadLog, warnings: [String]) {
    precondition(!scan.segments.isEmpty)
    var warnings = try removeLeftovers(scan, directory: directory, fileSystem: fs)
    let final = scan.segments[scan.segments.count - 1]
    let file = try fs.open(final.path, mode: .readWrite)
    do {
      if let torn = scan.torn {
        try file.truncate(to: torn.offset)
        warnings.append(
          "\(torn.path): cut off a torn record at offset \(torn.offset) (\(torn.reason)); "
            + "it was being written when the process stopped and was never synced")
      }
      if options.preallocateSegments {
        _ = try? file.allocate(size: max(Int64(options.segmentSizeBytes), final.end))
      }
      try file.dataSync()
      try fs.syncDirectory(directory)
    } catch {
      file.close()
      throw error
    }
    return (
      WriteAheadLog(
        directory: directory, fileSystem: fs, options: options, segments: scan.segments, activeFile: file),
      warnings
    )
  }

  /// Starts an empty log after `index`, replacing whatever the scan found (a fresh directory, or a
  /// snapshot that supersedes the log).
  static func replace(
    _ scan: WALScan, after index: UInt64, directory: String, fileSystem fs: any StorageFileSystem,
    options: FileStorageOptions
  ) throws(StorageError) -> (wal: WriteAheadLog, warnings: [String]) {
    let warnings = try removeLeftovers(scan, directory: directory, fileSystem: fs)
    for segment in scan.segments.reversed() {
      try fs.remove(segment.path)
      try fs.syncDirectory(directory)
    }
    let (segment, file) = try createSegment(
      firstIndex: index + 1, directory: directory, fileSystem: fs, options: options)
    return (
      WriteAheadLog(
        directory: directory, fileSystem: fs, options: options, segments: [segment], activeFile: file),
      warnings
    )
  }

  private static func removeLeftovers(
    _ scan: WALScan, directory: String, fileSystem fs: any StorageFileSystem
  ) throws(StorageError) -> [String] {
    var warnings: [String] = []
    for path in scan.incomplete {
      try fs.remove(path)
      warnings.append(
        "\(path): removed a segment whose creation was interrupted (no header reached the disk)")
    }
    for path in scan.temporaryFiles {
      try fs.remove(path)
      warnings.append("\(path): removed a leftover temporary file")
    }
    for path in scan.strayFiles {
      warnings.append("\(path): not a WAL segment name; left alone")
    }
    if !scan.incomplete.isEmpty || !scan.temporaryFiles.isEmpty { try fs.syncDirectory(directory) }
    return warnings
  }
}
