import ArgumentParser
import Foundation
import Histogram
import NIOCore
import NIOPosix
import RaftDBClient
import Synchronization

/// `raftctl watch-bench`: watch fan-out on one member (BENCHMARKS.md, "Watch fan-out").
struct WatchBench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "watch-bench",
    abstract: "Watch fan-out: put latency with and without many watchers, and their delivery latency.",
    discussion: """
      Three measured phases against one member, each --duration seconds of puts paced at --rate per \
      second to keys w/0 ... w/(--keys - 1), in turn: (1) no watchers; (2) --watchers Server-Sent \
      Events watches, spread evenly over the keys (each on its own connection); (3) the same plus one \
      stalled watcher of the whole w/ prefix, which never reads. Reports put latency (request to \
      answer) and delivery latency (put sent to event read by a watcher), in microseconds, and \
      whether the member cancelled the stalled watcher. The member needs -max-connections above \
      --watchers, and this process a file limit above it.
      """)

  @Option(help: "The member's HTTP address (it should lead: puts go there).") var endpoint = "127.0.0.1:8091"
  @Option(help: "Watchers, one connection each.") var watchers = 10_000
  @Option(help: "Distinct watched keys (watchers are spread over them).") var keys = 1_000
  @Option(help: "Puts per second.") var rate = 1_000
  @Option(help: "Measured seconds per phase.") var duration: Double = 15
  @Option(help: "Value size in bytes.") var valueSize = 256
  @Option(help: "Connections the puts are spread over.") var writers = 8
  @Option(help: "Event-loop threads of the watchers.") var threads = 1
  @Option(
    help: "The member's process id, to report the CPU time it spends in each phase (Linux, /proc).")
  var memberPid: Int?

  func run() async throws {
    guard let (host, port) = splitHostPort(endpoint) else {
      throw ValidationError("--endpoint must be host:port, got \(endpoint)")
    }
    let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
    let clock = WatchBenchClock(capacity: Int(Double(rate) * duration * 3.5) + 1_000)
    print("watch-bench: \(watchers) watchers over \(keys) keys, \(rate) puts/s, \(duration) s per phase")
    let cpu = memberPid.map { MemberCPU(pid: $0) }
    let baseline = try await putPhase(host, port, clock: clock, label: "no watchers", cpu: cpu)
    var connections: [any Channel] = []
    let fanout = WatchFanout(clock: clock)
    for start in stride(from: 0, to: watchers, by: 500) {
      for i in start..<min(start + 500, watchers) {
        connections.append(try await fanout.connect(host, port, path: "/watch/w/\(i % keys)", group: group))
      }
      // Wait for this batch to be created before opening the next.
      while fanout.created.load(ordering: .relaxed) < min(start + 500, watchers) {
        try await Task.sleep(for: .milliseconds(20))
      }
    }
    print("  \(watchers) watches created")
    fanout.reset()
    let watched = try await putPhase(host, port, clock: clock, label: "\(watchers) watchers", cpu: cpu)
    let delivered = fanout.report()
    fanout.reset()
    let stalled = try await StalledWatch.connect(host, port, path: "/watch/w/?prefix=true", group: group)
    let withStalled = try await putPhase(
      host, port, clock: clock, label: "\(watchers) watchers + 1 stalled", cpu: cpu)
    let deliveredWithStalled = fanout.report()
    let expected = Double(rate) * duration * Double(watchers) / Double(keys)
    print(
      """
      results (microseconds)
        put, no watchers:                \(baseline)
        put, \(watchers) watchers:        \(watched)
        delivery, \(watchers) watchers:   \(delivered.summary) (\(delivered.events) events, about \(Int(expected)) expected)
        put, + 1 stalled watcher:        \(withStalled)
        delivery, + 1 stalled watcher:   \(deliveredWithStalled.summary) (\(deliveredWithStalled.events) events)
        stalled watcher: \(stalled.isActive ? "still connected (not yet over its buffer)" : "cancelled and closed by the member")
      """)
    if let cpu, cpu.phases.count == 3 {
      let puts = Double(rate) * duration
      let idle = cpu.phases[0]
      print("  member CPU (utime + stime of pid \(cpu.pid)):")
      for (index, label) in ["no watchers", "\(watchers) watchers", "+ 1 stalled"].enumerated() {
        let phase = cpu.phases[index]
        let extra = (phase - idle) / max(1, expected)
        print(
          "    \(label): \(Int(phase / (duration * 10_000)))% of a core, \(Int(phase / puts)) us per put"
            + (index == 0 ? "" : ", \(String(format: "%.1f", extra)) us more per event delivered"))
      }
    }
    for channel in connections { channel.close(promise: nil) }
    try? await stalled.close()
    try await group.shutdownGracefully()
  }

  /// Puts paced at `rate` for `duration` seconds over `writers` keep-alive connections; returns the
  /// latency summary.
  private func putPhase(
    _ host: String, _ port: Int, clock: WatchBenchClock, label: String, cpu: MemberCPU?
  ) async throws -> String {
    let recorder = LatencyRecorder()
    let total = Int(Double(rate) * duration)
    let first = clock.reserve(total)
    let interval = Duration.seconds(1) / rate
    let padding = String(repeating: "p", count: max(0, valueSize - 12))
    // Connections first, so that the CPU window holds the paced puts only.
    var connections: [HTTPConnection] = []
    for _ in 0..<writers {
      connections.append(
        try await HTTPConnection.connect(host: host, port: port, group: WatchBench.clientGroup))
    }
    let start = ContinuousClock.now + .milliseconds(100)
    try await Task.sleep(until: start, clock: .continuous)
    cpu?.begin()
    defer { cpu?.end() }
    try await withThrowingTaskGroup(of: Void.self) { tasks in
      for (writer, connection) in connections.enumerated() {
        tasks.addTask {
          defer { Task { await connection.close() } }
          for n in stride(from: writer, to: total, by: writers) {
            try await Task.sleep(until: start + interval * n, clock: .continuous)
            let sequence = first + n
            let body = #"{"w/\#(n % keys)": "s\#(sequence)_\#(padding)"}"#
            let sent = clock.stamp(sequence)
            let response = try? await connection.send(
              HTTPRequestData(method: .POST, path: "/key", body: Array(body.utf8)), timeout: .seconds(10))
            recorder.record(
              (DispatchTime.now().uptimeNanoseconds - sent) / 1000, failed: response?.status != .ok)
          }
        }
      }
      try await tasks.waitForAll()
    }
    let summary = recorder.summary
    print("  \(label): put \(summary), errors \(recorder.errors.load(ordering: .relaxed))")
    return summary
  }

  static func summary(_ histogram: Histogram<UInt64>) -> String {
    "p50 \(histogram.valueAtPercentile(50)) p99 \(histogram.valueAtPercentile(99)) "
      + "p99.9 \(histogram.valueAtPercentile(99.9)) max \(histogram.max) (n=\(histogram.totalCount))"
  }

  static let clientGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
}

/// The CPU time (user and system) a process spent in each phase, from `/proc/PID/stat`, in
/// clock ticks (10 ms each on Linux), so a phase of 15 s is measured to within about 0.1%.
final class MemberCPU {
  let pid: Int
  /// Microseconds of CPU per finished phase.
  private(set) var phases: [Double] = []
  private var started: Double?

  init(pid: Int) { self.pid = pid }

  func begin() { started = ticks() }

  func end() {
    guard let started, let now = ticks() else { return }
    phases.append((now - started) * 1_000_000 / Double(sysconf(Int32(_SC_CLK_TCK))))
    self.started = nil
  }

  /// utime + stime: fields 14 and 15, counted after the command name, which may hold spaces.
  private func ticks() -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
      let close = stat.lastIndex(of: ")")
    else { return nil }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else {
      return nil
    }
    return user + system
  }
}

/// Put latencies from several tasks.
final class LatencyRecorder: Sendable {
  private let histogram = Mutex(
    Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three))
  let errors = Atomic<Int>(0)

  func record(_ micros: UInt64, failed: Bool) {
    histogram.withLock { $0.record(micros) }
    if failed { errors.add(1, ordering: .relaxed) }
  }

  var summary: String { histogram.withLock { WatchBench.summary($0) } }
}

/// When each put was sent, by its sequence number (carried in its value), for the watchers.
final class WatchBenchClock: Sendable {
  private let sent: Mutex<[UInt64]>
  private let next = Atomic<Int>(0)

  init(capacity: Int) { sent = Mutex(Array(repeating: 0, count: capacity)) }

  func reserve(_ count: Int) -> Int { next.add(count, ordering: .relaxed).oldValue }

  func stamp(_ sequence: Int) -> UInt64 {
    let now = DispatchTime.now().uptimeNanoseconds
    sent.withLock { $0[sequence] = now }
    return now
  }

  func sentAt(_ sequence: Int) -> UInt64? {
    sent.withLock { sequence < $0.count && $0[sequence] > 0 ? $0[sequence] : nil }
  }
}

/// The watchers: raw connections whose handler scans the event stream for values `s<sequence>_`.
final class WatchFanout: Sendable {
  let clock: WatchBenchClock
  let created = Atomic<Int>(0)
  private let delivery = Mutex(
    (Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three), 0))

  init(clock: WatchBenchClock) { self.clock = clock }

  func connect(_ host: String, _ port: Int, path: String, group: any EventLoopGroup) async throws
    -> any Channel
  {
    try await ClientBootstrap(group: group)
      .channelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
          try channel.pipeline.syncOperations.addHandler(WatchStreamScanner(fanout: self, path: path))
        }
      }
      .connect(host: host, port: port).get()
  }

  func received(sequence: Int) {
    guard let sent = clock.sentAt(sequence) else { return }
    let micros = (DispatchTime.now().uptimeNanoseconds - sent) / 1000
    delivery.withLock {
      $0.0.record(micros)
      $0.1 += 1
    }
  }

  func reset() {
    delivery.withLock {
      $0.0.reset()
      $0.1 = 0
    }
  }

  func report() -> (summary: String, events: Int) {
    delivery.withLock { (WatchBench.summary($0.0), $0.1) }
  }
}

/// Sends the watch request and finds, in what comes back, each `"value":"s<digits>_` (one per event)
/// and each `event: created`. A marker split across reads is carried over.
final class WatchStreamScanner: ChannelInboundHandler, @unchecked Sendable {
  // Unchecked: confined to its channel's event loop, as every NIO handler.
  typealias InboundIn = ByteBuffer
  let fanout: WatchFanout
  let path: String
  private var carry: [UInt8] = []
  private static let valueMarker = Array(#""value":"s"#.utf8)
  private static let createdMarker = Array("event: created".utf8)

  init(fanout: WatchFanout, path: String) {
    self.fanout = fanout
    self.path = path
  }

  func channelActive(context: ChannelHandlerContext) {
    let request = "GET \(path) HTTP/1.1\r\nHost: bench\r\n\r\n"
    context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: request)), promise: nil)
  }

  func channelRead(context: ChannelHandlerContext, data: NIOAny) {
    let buffer = unwrapInboundIn(data)
    var bytes = carry
    bytes.append(contentsOf: buffer.readableBytesView)
    var i = 0
    var consumed = 0
    while i < bytes.count {
      if bytes[i] == UInt8(ascii: "\""), Self.matches(Self.valueMarker, in: bytes, at: i) {
        var j = i + Self.valueMarker.count
        var sequence = 0
        while j < bytes.count, bytes[j] >= 48, bytes[j] <= 57 {
          sequence = sequence * 10 + Int(bytes[j] - 48)
          j += 1
        }
        guard j < bytes.count else { break }  // The number may go on in the next read.
        fanout.received(sequence: sequence)
        i = j
        consumed = j
        continue
      }
      if bytes[i] == UInt8(ascii: "e"), Self.matches(Self.createdMarker, in: bytes, at: i) {
        fanout.created.add(1, ordering: .relaxed)
        i += Self.createdMarker.count
        consumed = i
        continue
      }
      i += 1
    }
    // Keep a tail long enough to hold a marker cut in two.
    carry = Array(bytes[max(consumed, bytes.count - 32)...])
  }

  static func matches(_ marker: [UInt8], in bytes: [UInt8], at i: Int) -> Bool {
    guard i + marker.count <= bytes.count else { return false }
    for k in 0..<marker.count where bytes[i + k] != marker[k] { return false }
    return true
  }
}

/// A watch whose client never reads: automatic reads are off and its receive buffer is small.
enum StalledWatch {
  static func connect(_ host: String, _ port: Int, path: String, group: any EventLoopGroup) async throws
    -> any Channel
  {
    let channel = try await ClientBootstrap(group: group)
      .channelOption(.autoRead, value: false)
      .channelOption(.socketOption(.so_rcvbuf), value: 4096)
      .connect(host: host, port: port).get()
    let request = "GET \(path) HTTP/1.1\r\nHost: bench\r\n\r\n"
    try await channel.writeAndFlush(channel.allocator.buffer(string: request))
    return channel
  }
}
