import JSON
import NIOCore
import NIOHTTP1
import NIOPosix

/// One Server-Sent Events message: its `event` name, its `data` lines joined with newlines, and its
/// `id` if it had one.
public struct SSEMessage: Sendable, Equatable {
  public var event: String
  public var data: String
  public var id: String?

  public init(event: String = "message", data: String = "", id: String? = nil) {
    self.event = event
    self.data = data
    self.id = id
  }
}

public enum SSEError: Error, Sendable, CustomStringConvertible {
  /// A message (or one line of it) grew beyond the bound without ending: a broken or hostile server.
  case messageTooLarge(Int)

  public var description: String {
    switch self {
    case .messageTooLarge(let limit): "event stream message larger than \(limit) bytes"
    }
  }
}

/// Parses a Server-Sent Events stream incrementally, as its body arrives in parts of any size: a
/// message is complete at its blank line. Holds at most `maxMessageBytes` of one unfinished message
/// (its partial line and the data lines before it), so that a server that never ends a line cannot
/// make the client grow without bound.
public struct SSEParser: Sendable {
  public let maxMessageBytes: Int
  private var line: [UInt8] = []
  private var event = ""
  private var data: [UInt8] = []
  private var hasData = false
  private var id: String?
  private var lastWasCR = false

  public init(maxMessageBytes: Int = 64 << 20) { self.maxMessageBytes = maxMessageBytes }

  /// Feeds the next bytes of the stream; returns the messages they complete.
  public mutating func feed(_ bytes: some Sequence<UInt8>) throws -> [SSEMessage] {
    var messages: [SSEMessage] = []
    for byte in bytes {
      if byte == UInt8(ascii: "\n") && lastWasCR {
        // The LF of a CRLF: the CR already ended the line.
        lastWasCR = false
        continue
      }
      lastWasCR = byte == UInt8(ascii: "\r")
      if byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") {
        if let message = endLine() { messages.append(message) }
        continue
      }
      guard line.count + data.count < maxMessageBytes else { throw SSEError.messageTooLarge(maxMessageBytes) }
      line.append(byte)
    }
    return messages
  }

  /// Ends the current line: a blank one dispatches the message, anything else is a field.
  private mutating func endLine() -> SSEMessage? {
    defer { line.removeAll(keepingCapacity: true) }
    if line.isEmpty {
      defer {
        event = ""
        data = []
        hasData = false
        id = nil
      }
      guard hasData || !event.isEmpty || id != nil else { return nil }
      return SSEMessage(
        event: event.isEmpty ? "message" : event, data: String(decoding: data, as: UTF8.self), id: id)
    }
    if line.first == UInt8(ascii: ":") { return nil }  // A comment (the server's heartbeat).
    let colon = line.firstIndex(of: UInt8(ascii: ":")) ?? line.endIndex
    let name = String(decoding: line[..<colon], as: UTF8.self)
    var valueStart = colon < line.endIndex ? line.index(after: colon) : colon
    if valueStart < line.endIndex && line[valueStart] == UInt8(ascii: " ") { valueStart += 1 }
    let value = line[valueStart...]
    switch name {
    case "event": event = String(decoding: value, as: UTF8.self)
    case "data":
      if hasData { data.append(UInt8(ascii: "\n")) }
      data += value
      hasData = true
    case "id": id = String(decoding: value, as: UTF8.self)
    default: break  // "retry" and unknown fields: ignored, as the SSE specification says.
    }
    return nil
  }
}

/// A streaming HTTP GET whose body is a Server-Sent Events stream, read as it arrives (with back
/// pressure: nothing is read ahead of the consumer beyond NIO's buffers) and never held whole.
public enum EventStream {
  /// Connects to `host:port`, sends `GET path` with `headers`, and calls `onMessage` with each
  /// message until the server ends the stream (it returns normally) or `onMessage` returns false.
  /// A non-2xx answer is thrown as `RaftDBClientError.server` with its `{"error"}`; a connection
  /// that fails or drops is thrown as its error. A stream that stays silent for `idleTimeout` (the
  /// server sends a comment every 30 s) is treated as dropped: the member may be partitioned away.
  public static func get(
    host: String, port: Int, path: String, headers: [(String, String)] = [],
    group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
    connectTimeout: TimeAmount = .seconds(2),
    idleTimeout: TimeAmount = .seconds(75), maxMessageBytes: Int = 64 << 20,
    onOpen: @Sendable () -> Void = {},
    onMessage: (SSEMessage) async throws -> Bool
  ) async throws {
    let channel = try await ClientBootstrap(group: group)
      .connectTimeout(connectTimeout)
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .connect(host: host, port: port) { channel in
        channel.eventLoop.makeCompletedFuture {
          let sync = channel.pipeline.syncOperations
          try sync.addHTTPClientHandlers()
          try sync.addHandler(IdleStateHandler(readTimeout: idleTimeout))
          try sync.addHandler(CloseOnIdle())
          return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(
            wrappingChannelSynchronously: channel)
        }
      }
    try await channel.executeThenClose { inbound, outbound in
      var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
      head.headers.add(name: "Host", value: "\(host):\(port)")
      head.headers.add(name: "Accept", value: "text/event-stream")
      for (name, value) in headers { head.headers.add(name: name, value: value) }
      try await outbound.write(.head(head))
      try await outbound.write(.end(nil))
      var parser = SSEParser(maxMessageBytes: maxMessageBytes)
      var status: HTTPResponseStatus?
      var errorBody: [UInt8] = []
      for try await part in inbound {
        switch part {
        case .head(let responseHead):
          status = responseHead.status
          if (200..<300).contains(Int(responseHead.status.code)) { onOpen() }
        case .body(let buffer):
          guard let status, (200..<300).contains(Int(status.code)) else {
            if errorBody.count < 1 << 16 { errorBody += buffer.readableBytesView.prefix(1 << 16) }
            continue
          }
          for message in try parser.feed(buffer.readableBytesView) {
            guard try await onMessage(message) else { return }
          }
        case .end:
          guard let status else { throw HTTPClientError.connectionClosed }
          guard (200..<300).contains(Int(status.code)) else {
            throw RaftDBClientError.server(
              status: Int(status.code), message: errorMessage(errorBody))
          }
          return
        }
      }
      throw HTTPClientError.connectionClosed
    }
  }

  /// `{"error": "..."}`'s message, or the body as text.
  static func errorMessage(_ body: [UInt8]) -> String {
    (try? JSONParser.parse(body))?["error"]?.stringValue ?? String(decoding: body, as: UTF8.self)
  }
}

/// Closes the connection when `IdleStateHandler` reports that nothing has been read for its
/// timeout, so that the read loop ends with an error instead of waiting forever.
private final class CloseOnIdle: ChannelInboundHandler {
  typealias InboundIn = HTTPClientResponsePart
  typealias InboundOut = HTTPClientResponsePart

  func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
    if event is IdleStateHandler.IdleStateEvent {
      context.close(promise: nil)
    } else {
      context.fireUserInboundEventTriggered(event)
    }
  }
}
