import GRPCCore
import Synchronization

/// A long-lived call's state that the server can end: a watch stream, a lock waiting its turn, an
/// election observer.
protocol ClosableStream: AnyObject, Sendable {
  /// Ends the call soon: it returns (or fails) instead of waiting on.
  func close()
}

/// The long-lived calls open on one server, so that stopping ends them at once rather than after the
/// shutdown's grace period: a client keeps a watch, a lock wait or an observer open for as long as
/// it likes. Once closed, it admits no more.
final class OpenStreams<Stream: ClosableStream>: Sendable {
  private let state = Mutex<(open: [ObjectIdentifier: Stream], closed: Bool)>(([:], false))

  /// Adds `stream`; false once the server is stopping (the caller then ends the call).
  func add(_ stream: Stream) -> Bool {
    state.withLock { state in
      guard !state.closed else { return false }
      state.open[ObjectIdentifier(stream)] = stream
      return true
    }
  }

  func remove(_ stream: Stream) {
    state.withLock { _ = $0.open.removeValue(forKey: ObjectIdentifier(stream)) }
  }

  /// Ends every open stream, and every one added later.
  func closeAll() {
    let open = state.withLock { state in
      state.closed = true
      return Array(state.open.values)
    }
    for stream in open { stream.close() }
  }
}

/// One call that a stopping server may end: `close()` ends its wait.
final class ClosableCall: ClosableStream {
  let closed: AsyncStream<Void>
  private let continuation: AsyncStream<Void>.Continuation

  init() { (closed, continuation) = AsyncStream.makeStream(of: Void.self) }

  func close() { continuation.finish() }
}

extension OpenStreams where Stream == ClosableCall {
  /// Runs `body` (a call that may wait as long as its client likes: a keep-alive stream, a lock
  /// waiting its turn, an observer) until it returns, until the client cancels the call, or until
  /// the server stops; the last two cancel `body`. gRPC tells a handler of a cancelled call only
  /// through `context.cancellation` (it does not cancel the handler's task), so without this a
  /// lock wait whose client went away would wait on, keeping its place in the queue. Nothing polls.
  func untilClosed<T: Sendable>(
    _ context: ServerContext, _ body: @escaping @Sendable () async throws -> T
  ) async throws -> T {
    let call = ClosableCall()
    guard add(call) else { throw ServiceStopped.error }
    defer { remove(call) }
    return try await withThrowingTaskGroup(of: CallOutcome<T>.self) { group in
      group.addTask { .done(try await body()) }
      group.addTask {
        for await _ in call.closed {}
        return .stopped
      }
      group.addTask {
        try await context.cancellation.cancelled
        return .cancelled
      }
      defer { group.cancelAll() }
      switch try await group.next() {
      case .done(let result): return result
      case .cancelled: throw RPCError(code: .cancelled, message: "etcdserver: request cancelled")
      case .stopped, nil: throw ServiceStopped.error
      }
    }
  }
}

/// How a call under `untilClosed` ended.
enum CallOutcome<T: Sendable>: Sendable {
  case done(T)
  case stopped
  case cancelled
}

enum ServiceStopped {
  static var error: RPCError { RPCError(code: .unavailable, message: "etcdserver: server stopped") }
}
