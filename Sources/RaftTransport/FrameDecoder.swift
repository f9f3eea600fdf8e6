import NIOCore
import Raft

/// Splits the byte stream into frames and decodes them. A frame above the limit is refused from its
/// length alone, before any of it is buffered, so a hostile or broken peer cannot make this node
/// allocate without bound. Until the first frame (the hello) has been decoded the limit is
/// `WireFormat.maxHelloFrameBytes`; after it, `maxFrameBytes`. On an inbound connection it also
/// records when a partial frame started (for the frame deadline) and charges the bytes it holds to
/// the shared buffer budget.
struct FrameDecoder: ByteToMessageDecoder {
  typealias InboundOut = Frame

  let maxFrameBytes: Int
  let maxEntriesPerMessage: Int
  private let progress: InboundConnectionProgress?
  private let budget: PeerBufferBudget?
  private var framesDecoded = 0

  /// `helloDecoded` starts the decoder past the hello (for tests that decode bare message frames).
  init(
    maxFrameBytes: Int, maxEntriesPerMessage: Int = 1 << 20, progress: InboundConnectionProgress? = nil,
    budget: PeerBufferBudget? = nil, helloDecoded: Bool = false
  ) {
    self.maxFrameBytes = maxFrameBytes
    self.maxEntriesPerMessage = maxEntriesPerMessage
    self.progress = progress
    self.budget = budget
    framesDecoded = helloDecoded ? 1 : 0
  }

  var currentLimit: Int {
    framesDecoded == 0 ? min(WireFormat.maxHelloFrameBytes, maxFrameBytes) : maxFrameBytes
  }

  mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
    guard let frame = try decodeFrame(from: &buffer) else {
      try account(buffered: buffer.readableBytes, now: context.eventLoop.now)
      return .needMoreData
    }
    progress?.partialFrameSince = nil
    context.fireChannelRead(wrapInboundOut(frame))
    return .continue
  }

  /// Notes a partial frame's start and charges what is buffered to the budget.
  private func account(buffered: Int, now: NIODeadline) throws {
    guard let progress else { return }
    if buffered > 0, progress.partialFrameSince == nil { progress.partialFrameSince = now }
    if let budget {
      guard budget.resize(from: progress.bufferedBytes, to: buffered) else {
        throw WireError.bufferBudgetExhausted(limit: budget.limitBytes)
      }
      progress.bufferedBytes = buffered
    }
  }

  mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws
    -> DecodingState
  {
    // The connection is ending: deliver what is whole, and give back this connection's share of
    // the buffer budget (the guard also does on close; whichever runs last leaves it at zero).
    while let frame = try decodeFrame(from: &buffer) { context.fireChannelRead(wrapInboundOut(frame)) }
    if let progress, let budget {
      _ = budget.resize(from: progress.bufferedBytes, to: 0)
      progress.bufferedBytes = 0
    }
    if buffer.readableBytes > 0 { throw WireError.malformed("connection closed inside a frame") }
    return .needMoreData
  }

  /// Decodes one frame if a whole one is buffered. Exposed for tests.
  mutating func decodeFrame(from buffer: inout ByteBuffer) throws(WireError) -> Frame? {
    guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
    guard length >= 1 else { throw .malformed("empty frame") }
    guard Int(length) <= currentLimit else { throw .frameTooLarge(Int(length), limit: currentLimit) }
    guard buffer.readableBytes >= 4 + Int(length) else { return nil }
    buffer.moveReaderIndex(forwardBy: 4)
    framesDecoded += 1
    var payload = buffer.readSlice(length: Int(length))!
    let typeByte: UInt8 = payload.readInteger()!
    guard let type = WireFormat.FrameType(rawValue: typeByte) else { throw .unknownFrameType(typeByte) }
    switch type {
    case .hello:
      let hello = try payload.readHello()
      guard payload.readableBytes == 0 else { throw .malformed("trailing bytes after hello") }
      return .hello(hello)
    case .message:
      let group: UInt32 = try payload.readChecked(UInt32.self, "group id")
      guard group == WireFormat.singleGroupID else { throw .unknownGroup(group) }
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
    case .helloAnswer:
      let verdictByte: UInt8 = try payload.readChecked(UInt8.self, "hello verdict")
      guard let verdict = WireFormat.HelloVerdict(rawValue: verdictByte) else {
        throw .malformed("hello verdict \(verdictByte)")
      }
      let cluster: UInt64 = try payload.readChecked(UInt64.self, "cluster id")
      guard payload.readableBytes == 0 else { throw .malformed("trailing bytes after hello answer") }
      return .helloAnswer(verdict, clusterID: cluster)
    }
  }
}
