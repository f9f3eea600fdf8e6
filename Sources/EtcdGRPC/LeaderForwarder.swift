import EtcdAPI
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import Synchronization

/// A follower's way to the leader for the calls that need it (writes, linearizable reads): gRPC
/// has no redirect, and etcd's clients expect any member to answer. The call is sent on as it came,
/// over gRPC to the leader's client port (which serves gRPC), and the leader's answer or error is
/// the client's. A forwarded call is marked, and a member that gets a marked call it cannot serve
/// answers `not leader` rather than forward it again, so two members with stale ideas of the leader
/// cannot pass a call back and forth.
///
/// One client per leader address is kept (members come and go rarely; the table is bounded and
/// the oldest entry dropped beyond `maxClients`).
final class LeaderForwarder: Sendable {
  static let leaderKey = "raftdb-leader"
  static let forwardedKey = "raftdb-forwarded"
  static let maxClients = 16

  private struct Entry {
    var client: GRPCClient<HTTP2ClientTransport.Posix>
    var running: Task<Void, any Error>
  }
  private let clients = Mutex<(entries: [String: Entry], order: [String], closed: Bool)>(([:], [], false))
  let group: any EventLoopGroup

  init(group: any EventLoopGroup) { self.group = group }

  static func isForwarded(_ metadata: Metadata) -> Bool {
    metadata[stringValues: forwardedKey].contains { _ in true }
  }

  /// The leader's address from a `not leader` error, when the call may be forwarded.
  static func leader(in error: RPCError, request metadata: Metadata) -> String? {
    guard error.code == .failedPrecondition, !isForwarded(metadata) else { return nil }
    return error.metadata[stringValues: leaderKey].first { _ in true }
  }

  static var forwardedMetadata: Metadata { [forwardedKey: "1"] }

  func client(for address: String) throws -> GRPCClient<HTTP2ClientTransport.Posix> {
    try clients.withLock { state in
      guard !state.closed else { throw RPCError(code: .unavailable, message: "etcdserver: server stopped") }
      if let entry = state.entries[address] { return entry.client }
      guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...])
      else {
        throw RPCError(code: .unavailable, message: "etcdserver: leader address \(address) is not host:port")
      }
      var host = String(address[..<colon])
      if host == "localhost" { host = "127.0.0.1" }
      let transport = try HTTP2ClientTransport.Posix(
        target: .dns(host: host, port: port), transportSecurity: .plaintext, eventLoopGroup: group)
      let client = GRPCClient(transport: transport)
      let running = Task { try await client.runConnections() }
      state.entries[address] = Entry(client: client, running: running)
      state.order.append(address)
      if state.order.count > Self.maxClients {
        let oldest = state.order.removeFirst()
        state.entries.removeValue(forKey: oldest)?.client.beginGracefulShutdown()
      }
      return client
    }
  }

  /// Serves `request` here (`here`); when that answers `not leader` with the leader's address, and
  /// the call was not forwarded already, sends it to the leader (`there`) and returns its answer.
  func served<Request: Sendable, Response: Sendable>(
    _ request: ServerRequest<Request>, here: (Request) async throws -> Response,
    there:
      @escaping @Sendable (GRPCClient<HTTP2ClientTransport.Posix>, ClientRequest<Request>) async throws
      -> Response
  ) async throws -> ServerResponse<Response> {
    do {
      return ServerResponse(message: try await here(request.message))
    } catch let error as RPCError {
      guard let leader = Self.leader(in: error, request: request.metadata) else { throw error }
      let forwarded = ClientRequest(message: request.message, metadata: Self.forwardedMetadata)
      do {
        return ServerResponse(message: try await there(try client(for: leader), forwarded))
      } catch let error as RPCError {
        // The leader's error as the client's, without the metadata the client transport put in it
        // (its response's trailers): passed on, those would repeat reserved headers such as
        // `grpc-status`, and the client would see the connection fail instead of the error.
        throw RPCError(code: error.code, message: error.message)
      }
    }
  }

  func shutdown() {
    let entries = clients.withLock { state in
      state.closed = true
      defer { state.entries = [:] }
      return Array(state.entries.values)
    }
    for entry in entries { entry.client.beginGracefulShutdown() }
  }
}
