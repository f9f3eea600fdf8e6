import EtcdAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import Testing

/// The watch stream's protocol through grpc-swift's client, for what etcdctl cannot drive: several
/// watches on one stream, client-chosen and automatic ids, a duplicate id, cancel, a progress
/// request and fragmented responses, against a real raftdb process on its HTTP port.
@Suite(.serialized) struct GRPCWatchStreamTests {
  typealias Request = Etcdserverpb_WatchRequest
  typealias Response = Etcdserverpb_WatchResponse

  static func create(
    _ key: String, rangeEnd: String = "", id: Int64, prevKV: Bool = false, fragment: Bool = false
  )
    -> Request
  {
    var create = Etcdserverpb_WatchCreateRequest()
    create.key = Data(key.utf8)
    create.rangeEnd = Data(rangeEnd.utf8)
    create.watchID = id
    create.prevKv = prevKV
    create.fragment = fragment
    var request = Request()
    request.requestUnion = .createRequest(create)
    return request
  }

  static func cancel(_ id: Int64) -> Request {
    var cancel = Etcdserverpb_WatchCancelRequest()
    cancel.watchID = id
    var request = Request()
    request.requestUnion = .cancelRequest(cancel)
    return request
  }

  /// Runs `script` with a sender of requests and a reader of responses on one watch stream; fails
  /// instead of hanging when an awaited response does not come within 30 s.
  static func withWatchStream(
    port: Int,
    _ script: @escaping @Sendable (AsyncStream<Request>.Continuation, ResponseReader) async throws -> Void
  ) async throws {
    let (requests, send) = AsyncStream.makeStream(of: Request.self)
    try await withThrowingTaskGroup(of: Void.self) { group in
      group.addTask {
        try await withGRPCClient(
          transport: .http2NIOPosix(
            target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
        ) { grpc in
          let watch = Etcdserverpb_Watch.Client(wrapping: grpc)
          try await watch.watch(requestProducer: { writer in
            for await request in requests { try await writer.write(request) }
          }) { response in
            try await script(send, ResponseReader(response.messages))
            send.finish()
          }
        }
      }
      group.addTask {
        try await Task.sleep(for: .seconds(30))
        throw CancellationError()
      }
      try await group.next()
      group.cancelAll()
    }
  }

  final class ResponseReader: @unchecked Sendable {
    // Unchecked: used by the one script task that owns the stream.
    var iterator: RPCAsyncSequence<Response, any Error>.AsyncIterator
    init(_ messages: RPCAsyncSequence<Response, any Error>) { iterator = messages.makeAsyncIterator() }
    func next() async throws -> Response {
      guard let message = try await iterator.next() else { throw CancellationError() }
      return message
    }
  }

  @Test func manyWatchesOnOneStreamWithIdsCancelProgressAndFragments() async throws {
    try #require(
      FileManager.default.isExecutableFile(atPath: EtcdctlKVTests.etcdctl.path),
      "run scripts/install-test-deps.sh")
    // A small request limit, so that a fragment-sized response needs only a small write.
    let node = try await EtcdctlKVTests.startNode(arguments: ["-max-request-bytes", "65536"])
    defer { node.harness.stopAll() }
    let port = node.harness.spec("node01").httpPort

    try await Self.withWatchStream(port: port) { send, responses in
      // A chosen id, the same id again (refused, as etcd does), then automatic ids from 0.
      send.yield(Self.create("a", id: 7))
      let seven = try await responses.next()
      #expect(seven.created && !seven.canceled && seven.watchID == 7, "\(seven)")
      send.yield(Self.create("b", id: 7))
      let duplicate = try await responses.next()
      #expect(duplicate.created && duplicate.canceled && duplicate.watchID == -1, "\(duplicate)")
      #expect(duplicate.cancelReason.contains("duplicate watch ID"), "\(duplicate)")
      send.yield(Self.create("b", id: 0))
      let zero = try await responses.next()
      send.yield(Self.create("c", id: 0))
      let one = try await responses.next()
      #expect(zero.created && zero.watchID == 0 && one.created && one.watchID == 1, "\(zero) \(one)")
      #expect(zero.header.memberID != 0 && zero.header.clusterID != 0)

      // A change reaches the watch on its key only, under that watch's id.
      #expect(try node.etcdctl("put", "a", "1").status == 0)
      let change = try await responses.next()
      #expect(change.watchID == 7 && change.events.count == 1, "\(change)")
      #expect(change.events.first?.kv.key == Data("a".utf8) && change.events.first?.type == .put)
      let written = change.header.revision

      // A progress request: each watch on the stream is told it has everything up to now.
      var progress = Request()
      progress.requestUnion = .progressRequest(Etcdserverpb_WatchProgressRequest())
      send.yield(progress)
      var notified: Set<Int64> = []
      for _ in 0..<3 {
        let note = try await responses.next()
        #expect(
          note.events.isEmpty && !note.created && !note.canceled && note.header.revision >= written, "\(note)"
        )
        notified.insert(note.watchID)
      }
      #expect(notified == [7, 0, 1])

      // Cancel: answered, and the watch hears no more.
      send.yield(Self.cancel(7))
      let canceled = try await responses.next()
      #expect(canceled.canceled && canceled.watchID == 7, "\(canceled)")
      #expect(try node.etcdctl("put", "a", "2").status == 0)
      #expect(try node.etcdctl("put", "b", "1").status == 0)
      let next = try await responses.next()
      #expect(next.watchID == 0 && next.events.first?.kv.key == Data("b".utf8), "\(next)")

      // fragment: a revision whose events (with previous values) exceed the request limit comes
      // in parts, all but the last marked fragment, together every event once.
      let value = String(repeating: "v", count: 12_000)
      for i in 0..<4 { #expect(try node.etcdctl("put", "f\(i)", value).status == 0) }
      send.yield(Self.create("f", rangeEnd: "g", id: 20, prevKV: true, fragment: true))
      #expect(try await responses.next().created)
      let txn = (0..<4).map { "put f\($0) \(value)" }.joined(separator: "\n")
      let ran = try node.etcdctl("txn", stdin: "\n\(txn)\n\n\n")
      #expect(ran.status == 0, "\(ran.stderr)")
      var parts: [Response] = []
      repeat { parts.append(try await responses.next()) } while parts.last?.fragment == true
      #expect(parts.count >= 2, "\(parts.map(\.events.count))")
      #expect(parts.allSatisfy { $0.watchID == 20 })
      #expect(
        parts.flatMap(\.events).map { String(decoding: $0.kv.key, as: UTF8.self) } == [
          "f0", "f1", "f2", "f3",
        ])
      #expect(parts.flatMap(\.events).allSatisfy { $0.prevKv.value.count == 12_000 })
    }
    #expect(
      await node.harness.eventually { await node.harness.metric("raftdb_watchers", "node01") == 0 },
      "the stream's watches end with it")
  }
}
