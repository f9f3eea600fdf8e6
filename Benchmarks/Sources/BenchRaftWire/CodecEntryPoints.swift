import NIOCore
import Raft

/// Public doors into RaftTransport's internal codec (WireFormat.swift and FrameDecoder.swift are
/// compiled into this module from the root's sources), so that the benchmark measures the real
/// encoder and decoder rather than a copy of them.
public enum WireCodec {
  /// Appends one message frame, exactly as a peer connection writes it.
  public static func encode(_ message: Message, into buffer: inout ByteBuffer) {
    buffer.writeMessageFrame(message)
  }

  /// Decodes one frame from the front of `buffer`, with the limits a peer connection uses.
  public static func decode(_ buffer: inout ByteBuffer, maxFrameBytes: Int = 64 << 20) throws -> Frame? {
    try FrameDecoder(maxFrameBytes: maxFrameBytes).decodeFrame(from: &buffer)
  }
}
