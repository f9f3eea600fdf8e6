import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// Bytes buffered in partial frames across every inbound peer connection, against one budget. A
/// connection whose next read would take the total past it is closed: without this, many
/// connections each holding a nearly complete large frame could take the node's memory.
final class PeerBufferBudget: Sendable {
  let limitBytes: Int
  private let used = Atomic<Int>(0)

  init(limitBytes: Int) { self.limitBytes = limitBytes }

  var usedBytes: Int { used.load(ordering: .relaxed) }

  /// Moves a connection's share from `old` to `new` bytes; false (changing nothing) if that would
  /// exceed the budget.
  func resize(from old: Int, to new: Int) -> Bool {
    let delta = new - old
    guard delta > 0 else {
      used.subtract(-delta, ordering: .relaxed)
      return true
    }
    let after = used.add(delta, ordering: .relaxed).newValue
    if after > limitBytes {
      used.subtract(delta, ordering: .relaxed)
      return false
    }
    return true
  }
}

/// Set once a connection's hello was accepted; read by the registry from other threads.
final class HelloFlag: Sendable {
  private let value = Atomic<Bool>(false)
  var isSet: Bool { value.load(ordering: .relaxed) }
  func set() { value.store(true, ordering: .relaxed) }
}

/// The inbound peer connections open now, against `limit`. When the table is full, a newcomer
/// takes the slot of the oldest connection that has not yet sent its hello: a stranger that
/// reconnects faster than the hello deadline can then hold slots only until members reconnect, not
/// lock them out. Only when every open connection has introduced itself is the newcomer refused.
final class InboundConnections: Sendable {
  enum Admission {
    case admitted
    case admittedEvicting(any Channel)
    case refused
  }

  private struct Entry {
    let channel: any Channel
    let acceptedAt: NIODeadline
    let hello: HelloFlag
  }

  let limit: Int
  private let entries = NIOLockedValueBox<[ObjectIdentifier: Entry]>([:])

  init(limit: Int) { self.limit = limit }

  var count: Int { entries.withLockedValue { $0.count } }

  /// Open connections that have sent their hello (for tests).
  var introducedCount: Int { entries.withLockedValue { $0.values.filter(\.hello.isSet).count } }

  func admit(_ channel: any Channel, hello: HelloFlag) -> Admission {
    let entry = Entry(channel: channel, acceptedAt: .now(), hello: hello)
    return entries.withLockedValue { entries in
      if entries.count < limit {
        entries[ObjectIdentifier(channel)] = entry
        return .admitted
      }
      let waiting = entries.filter { !$0.value.hello.isSet }
      guard let oldest = waiting.min(by: { $0.value.acceptedAt < $1.value.acceptedAt }) else {
        return .refused
      }
      entries[oldest.key] = nil
      entries[ObjectIdentifier(channel)] = entry
      return .admittedEvicting(oldest.value.channel)
    }
  }

  func remove(_ channel: any Channel) {
    _ = entries.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
  }
}

/// The one inbound snapshot stream a node receives at a time.
final class SnapshotSlot: Sendable {
  private let taken = Atomic<Bool>(false)

  func acquire() -> Bool {
    taken.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
  }

  func release() { taken.store(false, ordering: .releasing) }
}

/// What the frame decoder and the guard of one inbound connection share. Both run on the
/// connection's event loop, so this needs no synchronisation.
/// Times come from the connection's event loop (`EventLoop.now`), so that tests on an embedded loop
/// can move them.
final class InboundConnectionProgress {
  var acceptedAt = NIODeadline.now()
  var helloAccepted = false
  /// When the frame now arriving was first seen incomplete; nil between frames.
  var partialFrameSince: NIODeadline?
  var lastReadAt = NIODeadline.now()
  /// This connection's share of the `PeerBufferBudget`.
  var bufferedBytes = 0
}

/// Enforces the deadlines of one inbound peer connection: a hello within `helloTimeout`, each frame
/// complete within `frameTimeout` of its first byte, and some frame within `idleTimeout`. It also
/// returns the connection's share of the buffer budget when the connection closes.
final class PeerConnectionGuard: ChannelInboundHandler {
  typealias InboundIn = ByteBuffer

  private let progress: InboundConnectionProgress
  private let options: TransportOptions
  private let budget: PeerBufferBudget
  private let onRefusal: (TransportRefusal.Reason, String) -> Void
  private var timer: RepeatedTask?

  init(
    progress: InboundConnectionProgress, options: TransportOptions, budget: PeerBufferBudget,
    onRefusal: @escaping (TransportRefusal.Reason, String) -> Void
  ) {
    self.progress = progress
    self.options = options
    self.budget = budget
    self.onRefusal = onRefusal
  }

  func handlerAdded(context: ChannelHandlerContext) {
    progress.acceptedAt = context.eventLoop.now
    progress.lastReadAt = context.eventLoop.now
    let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
    timer = context.eventLoop.scheduleRepeatedTask(
      initialDelay: options.connectionCheckInterval, delay: options.connectionCheckInterval
    ) { _ in
      let (handler, context) = loopBound.value
      handler.check(context: context)
    }
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    progress.lastReadAt = context.eventLoop.now
    context.fireChannelRead(data)
  }

  func channelInactive(context: ChannelHandlerContext) {
    stop()
    context.fireChannelInactive()
  }

  func handlerRemoved(context: ChannelHandlerContext) { stop() }

  private func stop() {
    timer?.cancel()
    timer = nil
    _ = budget.resize(from: progress.bufferedBytes, to: 0)
    progress.bufferedBytes = 0
  }

  private func check(context: ChannelHandlerContext) {
    let now = context.eventLoop.now
    if !progress.helloAccepted, now - progress.acceptedAt > options.helloTimeout {
      close(context, .helloTimeout, "no hello within \(options.helloTimeout.seconds) s")
    } else if let since = progress.partialFrameSince, now - since > options.frameTimeout {
      close(context, .frameTimeout, "a frame incomplete after \(options.frameTimeout.seconds) s")
    } else if now - progress.lastReadAt > options.idleTimeout {
      close(context, .idleTimeout, "nothing received for \(options.idleTimeout.seconds) s")
    }
  }

  private func close(_ context: ChannelHandlerContext, _ reason: TransportRefusal.Reason, _ detail: String) {
    stop()
    onRefusal(reason, detail)
    context.close(promise: nil)
  }
}

extension TimeAmount {
  var seconds: Int64 { nanoseconds / 1_000_000_000 }
}
