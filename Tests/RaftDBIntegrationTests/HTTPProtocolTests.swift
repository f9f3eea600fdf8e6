import Foundation
import Testing

/// The HTTP/1.1 server itself, driven with raw bytes over a socket: pipelining, keep-alive and
/// close, chunked bodies, `Expect: 100-continue`, malformed requests, the connection limit, slow
/// clients and the budget of buffered bodies.
@Suite(.serialized) struct HTTPProtocolTests {
  @Test func pipelinedRequestsAreAnsweredInOrderAndCloseIsHonoured() async throws {
    let harness = try ClusterHarness()
    let node = try await harness.startCluster(["node01"])
    let socket = try RawSocket(port: harness.spec(node).httpPort)
    try socket.send(
      "POST /key HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{\"a\":\"1\"}\n"
        + "GET /key/a HTTP/1.1\r\nHost: x\r\n\r\n"
        + "GET /key/missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    let reply = socket.receiveUntilClosed()
    let statuses = reply.matches(of: /HTTP\/1\.1 \d{3} [A-Za-z ]+/).map { String($0.output) }
    #expect(statuses == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found"], "\(reply)")
    #expect(reply.contains(#"{"a":"1"}"#))
    #expect(
      reply.hasSuffix(#"{"error":"key \"missing\" not found"}"# + "\n"),
      "the connection closes after the last")
    harness.stopAll()
  }

  @Test func chunkedBodiesAndHTTP10AreUnderstood() async throws {
    let harness = try ClusterHarness()
    let node = try await harness.startCluster(["node01"])
    let port = harness.spec(node).httpPort
    let chunked = try RawSocket(port: port)
    try chunked.send(
      "POST /key HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + "5\r\n{\"b\":\r\n4\r\n\"2\"}\r\n0\r\n\r\n")
    #expect(chunked.receiveUntilClosed().hasPrefix("HTTP/1.1 200 OK"))
    let old = try RawSocket(port: port)
    try old.send("GET /key/b HTTP/1.0\r\n\r\n")
    let reply = old.receiveUntilClosed()
    #expect(reply.hasPrefix("HTTP/1.0 200 OK"), "\(reply)")
    #expect(reply.contains("Connection: close"))
    #expect(reply.hasSuffix(#"{"b":"2"}"# + "\n"))
    harness.stopAll()
  }

  @Test func percentEncodedKeysInThePathMeanTheirDecodedBytes() async throws {
    let harness = try ClusterHarness()
    let node = try await harness.startCluster(["node01"])
    let body = #"{"x y/é+": "v"}"#
    let put = try RawSocket(port: harness.spec(node).httpPort)
    try put.send("POST /key HTTP/1.1\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
    #expect(put.receive(atLeast: 12).hasPrefix("HTTP/1.1 200 OK"))
    try put.send("GET /key/x%20y%2F%C3%A9+?level=stale HTTP/1.1\r\nConnection: close\r\n\r\n")
    let reply = put.receiveUntilClosed()
    #expect(reply.hasSuffix(#"{"x y/é+":"v"}"# + "\n"), "\(reply)")
    let bad = try RawSocket(port: harness.spec(node).httpPort)
    try bad.send("GET /key/%ZZ HTTP/1.0\r\n\r\n")
    #expect(bad.receiveUntilClosed().hasPrefix("HTTP/1.0 400 Bad Request"))
    harness.stopAll()
  }

  @Test func expectContinueIsAnsweredAndAnOversizedBodyRefusedBeforeItIsSent() async throws {
    let harness = try ClusterHarness()
    let node = try await harness.startCluster(["node01"])
    let port = harness.spec(node).httpPort
    let small = try RawSocket(port: port)
    try small.send("POST /key HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
    #expect(small.receive(atLeast: 12).hasPrefix("HTTP/1.1 100 Continue"))
    try small.send("{\"c\":\"3\"}\nGET /key/c HTTP/1.1\r\nConnection: close\r\n\r\n")
    #expect(small.receiveUntilClosed().hasSuffix(#"{"c":"3"}"# + "\n"))

    let large = try RawSocket(port: port)
    try large.send(
      "POST /key HTTP/1.1\r\nHost: x\r\nContent-Length: \(1 << 30)\r\nExpect: 100-continue\r\n\r\n")
    let refusal = large.receiveUntilClosed()
    #expect(refusal.hasPrefix("HTTP/1.1 413 Payload Too Large"), "\(refusal)")
    #expect(refusal.contains(#"{"error":"request body exceeds the"#))
    harness.stopAll()
  }

  @Test func malformedRequestsGetAJSON400AndTheConnectionCloses() async throws {
    let harness = try ClusterHarness()
    let node = try await harness.startCluster(["node01"])
    for garbage in [
      "GARBAGE\r\n\r\n", "GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n", "\u{1}\u{2}\u{3}\r\n\r\n",
    ] {
      let socket = try RawSocket(port: harness.spec(node).httpPort)
      try socket.send(garbage)
      let reply = socket.receiveUntilClosed()
      #expect(reply.hasPrefix("HTTP/1.1 400 Bad Request"), "\(garbage.debugDescription): \(reply)")
      #expect(reply.contains(#"{"error":"malformed HTTP request"#))
    }
    #expect(try await harness.request(node, .GET, "/health").status == .ok)
    harness.stopAll()
  }

  @Test func aSilentConnectionIsClosedAfterTheIdleTimeout() async throws {
    let harness = try ClusterHarness(extraArguments: ["-http-idle-timeout", "1"])
    let node = try await harness.startCluster(["node01"])
    let socket = try RawSocket(port: harness.spec(node).httpPort)
    try socket.send("GET /health HTTP/1.1\r\n\r\n")
    #expect(socket.receive(atLeast: 15).hasPrefix("HTTP/1.1 200 OK"))
    let start = ContinuousClock.now
    let rest = socket.receiveUntilClosed()  // Returns at the server's close, or after 5 s.
    #expect(rest.isEmpty)
    #expect(ContinuousClock.now - start < .seconds(4), "closed by the server, not by the receive timeout")
    harness.stopAll()
  }

  @Test func aNewcomerToAFullTableTakesTheSlotOfAConnectionWaitingForItsClient() async throws {
    // Refusal when every connection has a request at the node is tested on an EmbeddedChannel
    // (HTTPLimitsTests), where a request can be held there.
    let harness = try ClusterHarness(extraArguments: ["-max-connections", "2"])
    let node = try await harness.startCluster(["node01"])
    let port = harness.spec(node).httpPort
    let first = try RawSocket(port: port)
    try first.send("GET /health HTTP/1.1\r\n\r\n")
    #expect(first.receive(atLeast: 15).hasPrefix("HTTP/1.1 200 OK"))
    let second = try RawSocket(port: port)
    let third = try RawSocket(port: port)
    try third.send("GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
    #expect(third.receiveUntilClosed().hasPrefix("HTTP/1.1 200 OK"), "served in place of an idle one")
    let answered = await harness.eventually(timeout: .seconds(5)) {
      guard let fourth = try? RawSocket(port: port), (try? fourth.send("GET /health HTTP/1.0\r\n\r\n")) != nil
      else { return false }
      return fourth.receiveUntilClosed().hasPrefix("HTTP/1.0 200 OK")
    }
    #expect(answered)
    let metrics = try await harness.request(node, .GET, "/metrics").bodyText
    #expect((Self.value("raftdb_http_evicted_connections_total", in: metrics) ?? 0) >= 1, "\(metrics)")
    withExtendedLifetime((first, second)) {}
    harness.stopAll()
  }

  @Test func aClientIsServedWhileSlowHeadsHoldTheWholeTableAndTheSlowOnesGet408() async throws {
    let harness = try ClusterHarness(extraArguments: ["-max-connections", "64", "-http-header-timeout", "5"])
    let node = try await harness.startCluster(["node01"])
    let port = harness.spec(node).httpPort
    // 64 connections that each send the first byte of a head and nothing more: the table is full.
    let slow = try (0..<64).map { _ in
      let socket = try RawSocket(port: port, receiveTimeoutSeconds: 60)
      try socket.send("G")
      return socket
    }
    let client = try RawSocket(port: port)
    try client.send("GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
    let reply = client.receiveUntilClosed()
    #expect(reply.hasPrefix("HTTP/1.1 200 OK"), "served in place of the longest-waiting slow one: \(reply)")
    // Each slow one is answered 408 and closed: when evicted, or at its head's deadline.
    for (index, socket) in slow.enumerated() {
      let answer = socket.receiveUntilClosed()
      #expect(answer.hasPrefix("HTTP/1.1 408 Request Timeout"), "slow connection \(index): \(answer)")
    }
    let metrics = try await harness.request(node, .GET, "/metrics").bodyText
    #expect((Self.value("raftdb_http_evicted_connections_total", in: metrics) ?? 0) >= 1, "\(metrics)")
    #expect((Self.value("raftdb_http_header_timeouts_total", in: metrics) ?? 0) >= 1, "\(metrics)")
    harness.stopAll()
  }

  @Test func bodiesBeyondTheBufferBudgetGet503AndTheBudgetComesBack() async throws {
    let harness = try ClusterHarness(extraArguments: [
      "-max-request-bytes", "1024", "-max-buffered-request-bytes", "2048",
    ])
    let node = try await harness.startCluster(["node01"])
    let port = harness.spec(node).httpPort
    // Two nearly complete bodies hold the whole budget.
    var holders: [RawSocket]? = try (0..<2).map { _ in
      let socket = try RawSocket(port: port)
      try socket.send("POST /key HTTP/1.1\r\nContent-Length: 1024\r\n\r\n{\"a\": \"")
      return socket
    }
    let held = await harness.eventually(timeout: .seconds(10)) {
      let metrics = (try? await harness.request(node, .GET, "/metrics").bodyText) ?? ""
      return Self.value("raftdb_http_buffered_request_bytes", in: metrics) == 2048
    }
    #expect(held, "both bodies are reserved in full at their heads")
    let probe = try RawSocket(port: port)
    try probe.send("POST /key HTTP/1.1\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n")
    let answer = probe.receiveUntilClosed()
    #expect(
      answer.hasPrefix("HTTP/1.1 503 Service Unavailable"), "refused before the body is sent: \(answer)")
    #expect(answer.hasSuffix(#"(-max-buffered-request-bytes); retry shortly"}"# + "\n"), "\(answer)")
    #expect(holders?.count == 2)
    holders = nil  // Closing them returns their reservations.
    let accepted = await harness.eventually(timeout: .seconds(10)) {
      (try? await harness.request(node, .POST, "/key", body: #"{"b":"2"}"#).status) == .ok
    }
    #expect(accepted, "the budget came back when the holders closed")
    let metrics = try await harness.request(node, .GET, "/metrics").bodyText
    #expect((Self.value("raftdb_http_buffer_refusals_total", in: metrics) ?? 0) >= 1, "\(metrics)")
    #expect(Self.value("raftdb_http_buffered_request_bytes", in: metrics) == 0, "\(metrics)")
    harness.stopAll()
  }

  /// The value of an unlabelled metric in Prometheus text.
  static func value(_ name: String, in metrics: String) -> Double? {
    metrics.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap {
      Double($0.split(separator: " ")[1])
    }
  }
}

/// A blocking loopback TCP socket with a receive timeout, for byte-exact HTTP exchanges.
final class RawSocket {
  private let descriptor: Int32

  init(port: Int, receiveTimeoutSeconds: Int = 5) throws {
    descriptor = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { throw HarnessError("socket: errno \(errno)") }
    var timeout = timeval(tv_sec: receiveTimeoutSeconds, tv_usec: 0)
    setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = loopbackAddress(port)
    let connected = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    guard connected == 0 else {
      close(descriptor)
      throw HarnessError("connect to \(port): errno \(errno)")
    }
  }

  deinit { close(descriptor) }

  func send(_ text: String) throws { try send(bytes: Array(text.utf8)) }

  func send(bytes: [UInt8]) throws {
    var sent = 0
    while sent < bytes.count {
      let count = bytes[sent...].withUnsafeBytes {
        Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
      }
      guard count > 0 else { throw HarnessError("send: errno \(errno)") }
      sent += count
    }
  }

  /// Whether the peer closed the connection (or reset it) before the receive timeout; whatever it
  /// sent first is read and dropped.
  func closedByPeer() -> Bool {
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
      let n = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
      if n > 0 { continue }
      if n == 0 { return true }
      return errno != EAGAIN && errno != EWOULDBLOCK
    }
  }

  /// Reads until the peer closes, an error, or the receive timeout (5 s unless told).
  func receiveUntilClosed() -> String { receive(atLeast: Int.max) }

  /// Reads until at least `count` bytes arrived, the peer closes, or the timeout passes.
  func receive(atLeast count: Int) -> String {
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while received.count < count {
      let n = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
      guard n > 0 else { break }
      received += buffer[..<n]
    }
    return String(decoding: received, as: UTF8.self)
  }
}
