import Raft

/// The layout of a snapshot file (integers big-endian):
///
///     header   magic "RDBS" (4), version (2), reserved (2), index (8), term (8), data length (8),
///              configuration length (4), encoded Configuration
///     data     the state machine's bytes, as streamed by the sink
///     trailer  CRC32C of header and data (4), magic "RDBE" (4)
///
/// The data length is known only once the data was streamed, so the sink writes a placeholder header,
/// streams the data, and writes the final header at commit; `CRC32C.combine` joins the header's and the
/// data's checksums without reading the data back.
@_spi(Testing) public enum SnapshotFileFormat {
  static let magic: UInt32 = 0x5244_4253
  static let trailerMagic: UInt32 = 0x5244_4245
  static let version: UInt16 = 1
  public static let fixedHeaderSize = 36
  static let trailerSize = 8

  static func header(_ metadata: SnapshotMetadata, dataLength: UInt64) -> [UInt8] {
    let configuration = metadata.configuration.encoded()
    var bytes = [UInt8](repeating: 0, count: fixedHeaderSize)
    bytes.withUnsafeMutableBytes { header in
      header.storeBigEndian(magic, at: 0)
      header.storeBigEndian(version, at: 4)
      header.storeBigEndian(UInt16(0), at: 6)
      header.storeBigEndian(metadata.index, at: 8)
      header.storeBigEndian(metadata.term, at: 16)
      header.storeBigEndian(dataLength, at: 24)
      header.storeBigEndian(UInt32(configuration.count), at: 32)
    }
    return bytes + configuration
  }

  static func trailer(checksum: UInt32) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: trailerSize)
    bytes.withUnsafeMutableBytes { trailer in
      trailer.storeBigEndian(checksum, at: 0)
      trailer.storeBigEndian(trailerMagic, at: 4)
    }
    return bytes
  }

  struct Header {
    var metadata: SnapshotMetadata
    var dataLength: Int64
    var size: Int
    /// CRC32C of the header bytes, the start of the file checksum.
    var checksum: UInt32
  }

  /// Reads and checks a snapshot file's header against its size and the name it was found under.
  static func readHeader(
    _ file: any StorageFile, expected: (index: UInt64, term: UInt64)
  ) throws(StorageError) -> Header {
    let path = file.path
    let fileSize = try file.size()
    let fixed = try file.read(count: fixedHeaderSize, at: 0)
    guard fixed.count == fixedHeaderSize else {
      throw .corruption(file: path, offset: 0, reason: "file too short for a snapshot header")
    }
    let (fileMagic, fileVersion, index, term, dataLength, configurationLength) = fixed.withUnsafeBytes { b in
      (
        b.loadBigEndian(at: 0, as: UInt32.self), b.loadBigEndian(at: 4, as: UInt16.self),
        b.loadBigEndian(at: 8, as: UInt64.self), b.loadBigEndian(at: 16, as: UInt64.self),
        b.loadBigEndian(at: 24, as: UInt64.self), Int(b.loadBigEndian(at: 32, as: UInt32.self))
      )
    }
    guard fileMagic == magic else { throw .corruption(file: path, offset: 0, reason: "bad snapshot magic") }
    guard fileVersion == version else {
      throw .unsupportedFormat(
        path: path, found: "snapshot version \(fileVersion)", supported: DataFormat.version)
    }
    guard index == expected.index, term == expected.term else {
      throw .corruption(
        file: path, offset: 8,
        reason: "header says snapshot \(index)@\(term), file name says \(expected.index)@\(expected.term)")
    }
    let limit = Configuration.memberCountLimit * (Configuration.contextSizeLimit + 32)
    guard configurationLength <= limit,
      Int64(fixedHeaderSize + configurationLength) + Int64(trailerSize) <= fileSize,
      dataLength == UInt64(fileSize - Int64(fixedHeaderSize + configurationLength + trailerSize))
    else {
      throw .corruption(
        file: path, offset: 24,
        reason:
          "header lengths (configuration \(configurationLength), data \(dataLength)) do not match the file size \(fileSize)"
      )
    }
    let configurationBytes = try file.read(count: configurationLength, at: Int64(fixedHeaderSize))
    let configuration: Configuration
    do {
      configuration = try Configuration(decoding: configurationBytes)
    } catch {
      throw .corruption(
        file: path, offset: Int64(fixedHeaderSize), reason: "undecodable configuration: \(error)")
    }
    let checksum = configurationBytes.withUnsafeBytes { CRC32C.update(CRC32C.checksum(fixed), $0) }
    return Header(
      metadata: SnapshotMetadata(index: index, term: term, configuration: configuration),
      dataLength: Int64(dataLength), size: fixedHeaderSize + configurationLength, checksum: checksum)
  }

  /// Checks the trailer against the checksum computed over header and data.
  static func checkTrailer(
    _ file: any StorageFile, at offset: Int64, checksum: UInt32
  ) throws(StorageError) {
    let trailer = try file.read(count: trailerSize, at: offset)
    guard trailer.count == trailerSize else {
      throw .corruption(file: file.path, offset: offset, reason: "snapshot trailer missing")
    }
    let (stored, storedMagic) = trailer.withUnsafeBytes {
      ($0.loadBigEndian(at: 0, as: UInt32.self), $0.loadBigEndian(at: 4, as: UInt32.self))
    }
    guard storedMagic == trailerMagic else {
      throw .corruption(file: file.path, offset: offset + 4, reason: "bad snapshot trailer magic")
    }
    guard stored == checksum else {
      throw .corruption(
        file: file.path, offset: offset,
        reason: "snapshot checksum mismatch (stored \(hex(stored)), computed \(hex(checksum)))")
    }
  }

  static func hex(_ value: UInt32) -> String {
    let digits = String(value, radix: 16)
    return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
  }
}
