import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// A request as the client sends it.
public struct HTTPRequestData: Sendable {
  public var method: HTTPMethod
  public var path: String
  public var headers: [(String, String)]
  public var body: [UInt8]

  public init(method: HTTPMethod, path: String, headers: [(String, String)] = [], body: [UInt8] = []) {
    self.method = method
    self.path = path
    self.headers = headers
    self.body = body
  }
}

/// A whole response.
public struct HTTPResponseData: Sendable {
  public var status: HTTPResponseStatus
  public var headers: HTTPHeaders
  public var body: [UInt8]

  public var bodyText: String { String(decoding: body, as: UTF8.self) }
}

public enum HTTPClientError: Error, Sendable, CustomStringConvertible {
  case connectionClosed
  case responseTooLarge(Int)
  case timedOut

  public var description: String {
    switch self {
    case .connectionClosed: "connection closed before the response arrived"
    case .responseTooLarge(let limit): "response larger than \(limit) bytes"
    case .timedOut: "request timed out"
    }
  }
}

/// One keep-alive HTTP/1.1 connection that carries one request at a time. Small on purpose: the load
/// generator opens one per simulated client, and its own cost must stay far below the server's.
public final class HTTPConnection: Sendable {
  public let host: String
  public let port: Int
  private let channel: any Channel
  private let handler: NIOLoopBound<ResponseCollector>

  private init(host: String, port: Int, channel: any Channel, handler: NIOLoopBound<ResponseCollector>) {
    self.host = host
    self.port = port
    self.channel = channel
    self.handler = handler
  }

  public static func connect(
    host: String, port: Int, group: any EventLoopGroup, connectTimeout: TimeAmount = .seconds(2),
    maxResponseBytes: Int = 64 << 20
  ) async throws -> HTTPConnection {
    let channel = try await ClientBootstrap(group: group)
      .connectTimeout(connectTimeout)
      .channelOption(.socketOption(.tcp_nodelay), value: 1)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          let sync = channel.pipeline.syncOperations
          try sync.addHTTPClientHandlers()
          try sync.addHandler(ResponseCollector(maxBytes: maxResponseBytes))
        }
      }
      .connect(host: host, port: port)
      .get()
    let collector = try await channel.eventLoop.submit {
      NIOLoopBound(
        try channel.pipeline.syncOperations.handler(type: ResponseCollector.self),
        eventLoop: channel.eventLoop)
    }.get()
    return HTTPConnection(host: host, port: port, channel: channel, handler: collector)
  }

  public var isOpen: Bool { channel.isActive }

  /// Sends one request and waits for its whole response.
  public func send(_ request: HTTPRequestData, timeout: TimeAmount = .seconds(30)) async throws
    -> HTTPResponseData
  {
    let promise = channel.eventLoop.makePromise(of: HTTPResponseData.self)
    let host = "\(self.host):\(port)"
    channel.eventLoop.execute { [handler, channel] in
      handler.value.enqueue(promise)
      var head = HTTPRequestHead(version: .http1_1, method: request.method, uri: request.path)
      head.headers.add(name: "Host", value: host)
      head.headers.add(name: "Content-Length", value: String(request.body.count))
      for (name, value) in request.headers { head.headers.add(name: name, value: value) }
      channel.write(HTTPClientRequestPart.head(head), promise: nil)
      if !request.body.isEmpty {
        channel.write(
          HTTPClientRequestPart.body(.byteBuffer(channel.allocator.buffer(bytes: request.body))), promise: nil
        )
      }
      channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
    }
    let deadline = channel.eventLoop.scheduleTask(in: timeout) {
      promise.fail(HTTPClientError.timedOut)
      self.channel.close(promise: nil)
    }
    defer { deadline.cancel() }
    return try await promise.futureResult.get()
  }

  public func close() async {
    try? await channel.close()
  }
}

/// Collects response parts into whole responses, answering waiting requests in order.
private final class ResponseCollector: ChannelInboundHandler, RemovableChannelHandler {
  typealias InboundIn = HTTPClientResponsePart

  private let maxBytes: Int
  private var waiting = CircularBuffer<EventLoopPromise<HTTPResponseData>>()
  private var head: HTTPResponseHead?
  private var body: [UInt8] = []

  init(maxBytes: Int) { self.maxBytes = maxBytes }

  func enqueue(_ promise: EventLoopPromise<HTTPResponseData>) { waiting.append(promise) }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    switch unwrapInboundIn(data) {
    case .head(let responseHead):
      head = responseHead
      body.removeAll(keepingCapacity: true)
    case .body(var buffer):
      guard body.count + buffer.readableBytes <= maxBytes else {
        waiting.popFirst()?.fail(HTTPClientError.responseTooLarge(maxBytes))
        context.close(promise: nil)
        return
      }
      body.append(contentsOf: buffer.readBytes(length: buffer.readableBytes) ?? [])
    case .end:
      guard let head else { return }
      self.head = nil
      waiting.popFirst()?.succeed(HTTPResponseData(status: head.status, headers: head.headers, body: body))
    }
  }

  func channelInactive(context: ChannelHandlerContext) {
    while let promise = waiting.popFirst() { promise.fail(HTTPClientError.connectionClosed) }
    context.fireChannelInactive()
  }

  func errorCaught(context: ChannelHandlerContext, error: any Error) {
    while let promise = waiting.popFirst() { promise.fail(error) }
    context.close(promise: nil)
  }
}
