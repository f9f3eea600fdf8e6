import NIOCore
import Raft

/// Splits the byte stream into frames and decodes them. A frame above `maxFrameBytes` is refused from
/// its length alone, before any of it is buffered, so a hostile or broken peer cannot make this node
/// allocate without bound.
struct FrameDecoder: ByteToMessageDecoder {
  typealias InboundOut = Frame

  let maxFrameBytes: Int
  let maxEntriesPerMessage: Int

  init(maxFrameBytes: Int, maxEntriesPerMessage: Int = 1 << 20) {
    self.maxFrameBytes = maxFrameBytes
    self.maxEntriesPerMessage = maxEntriesPerMessage
  }

  mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
    guard let frame = try decodeFrame(from: &buffer) else { return .needMoreData }
    context.fireChannelRead(wrapInboundOut(frame))
    return .continue
  }

  mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws
    -> DecodingState
  {
    while try decode(context: context, buffer: &buffer) == .continue {}
    if buffer.readableBytes > 0 { throw WireError.malformed("connection closed inside a frame") }
    return .needMoreData
  }

  /// Decodes one frame if a whole one is buffered. Exposed for tests.
  func decodeFrame(from buffer: inout ByteBuffer) throws(WireError) -> Frame? {
    guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
    guard length >= 1 else { throw .malformed("empty frame") }
    guard Int(length) <= maxFrameBytes else { throw .frameTooLarge(Int(length), limit: maxFrameBytes) }
    guard buffer.readableBytes >= 4 + Int(length) else { return nil }
    buffer.moveReaderIndex(forwardBy: 4)
    var payload = buffer.readSlice(length: Int(length))!
    let typeByte: UInt8 = payload.readInteger()!
    guard let type = WireFormat.FrameType(rawValue: typeByte) else { throw .unknownFrameType(typeByte) }
    switch type {
    case .hello:
      let hello = try payload.readHello()
      guard payload.readableBytes == 0 else { throw .malformed("trailing bytes after hello") }
      return .hello(hello)
    case .message:
      return .message(try payload.readRaftMessage(maxEntries: maxEntriesPerMessage))
    case .snapshotBegin:
      let metadata = try payload.readSnapshotMetadata()
      let size: UInt64 = try payload.readChecked(UInt64.self, "snapshot size")
      guard payload.readableBytes == 0 else { throw .malformed("trailing bytes after snapshot header") }
      return .snapshotBegin(metadata, dataSize: size)
    case .snapshotChunk:
      return .snapshotChunk(payload)
    case .snapshotEnd:
      return .snapshotEnd
    case .snapshotAck:
      return .snapshotAck
    }
  }
}
