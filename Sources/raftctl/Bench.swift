import ArgumentParser
import Foundation
import Histogram
import JSON
import NIOCore
import NIOHTTP1
import NIOPosix
import Raft
import RaftDBAPI
import RaftDBClient

/// `raftctl bench`: a closed-loop load generator for raftdb and, for comparison, etcd's JSON gateway.
struct Bench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Closed-loop load generator: N clients, one keep-alive HTTP/1.1 connection each.",
    discussion: """
      Each client sends one request, waits for the answer, and sends the next. Writes and default or \
      consistent reads go to the leader (found through /status for raftdb, /v3/maintenance/status for \
      etcd; a 307 is followed and the client stays with the new address); stale reads are spread over \
      all endpoints. Before get, cas and mixed runs the whole key space is written once.

      Latency is in microseconds (HdrHistogram, 3 significant digits) over successful operations \
      that started after the warm-up and ended before the end of the measured window. The \
      generator's own CPU (getrusage user+sys of this process over the window) is reported so that \
      it can be seen not to be the bottleneck.

      --target etcd speaks to etcd's gRPC-gateway JSON endpoints (/v3/kv/put, /v3/kv/range with \
      serializable true for stale reads, false otherwise; /v3/kv/txn for cas): etcd's HTTP/JSON path, \
      not its native gRPC one.
      """)

  @OptionGroup var endpoints: Endpoints
  @Option(help: "raftdb or etcd (its JSON gateway).") var target: String = "raftdb"
  @Option(help: "put, get, cas, mixed, noop (the server's cheapest request) or echo (raw TCP floor).")
  var op: String = "put"
  @Option(help: "Read level for get and mixed: stale, default or consistent.") var level: String = "default"
  @Option(help: "Concurrent clients (connections).") var clients = 1
  @Option(help: "Key size in bytes.") var keySize = 16
  @Option(help: "Value size in bytes (also the echo request size).") var valueSize = 256
  @Option(help: "Number of distinct keys.") var keys = 10_000
  @Option(help: "Percentage of reads in --op mixed.") var readPercent = 50
  @Option(help: "Measured seconds (ignored with --requests).") var duration: Double = 10
  @Option(help: "Measured operations in all, instead of a duration.") var requests: Int?
  @Option(help: "Seconds of load before measuring starts.") var warmup: Double = 2
  @Option(help: "Seed for keys and values.") var seed: UInt64 = 1
  @Option(help: "Event-loop threads of the generator.") var threads = 1
  @Option(help: "Seconds before a request counts as timed out.") var timeout: Double = 10
  @Option(help: "Where clients connect: auto (leader, or all for stale reads), leader, or all.")
  var connect: String = "auto"
  @Flag(help: "Give every raftdb write an Idempotency-Key header, as RaftDBClient does.")
  var idempotencyKeys = false
  @Flag(help: "Skip writing the key space before get, cas and mixed runs.") var noPopulate = false
  @Flag(help: "Print one JSON object instead of the text report.") var json = false
  @Option(help: "Comma-separated pids of server processes whose CPU (from /proc) to report over the window.")
  var watchPids: String?

  func validate() throws {
    guard BenchTarget(rawValue: target) != nil else {
      throw ValidationError("--target must be raftdb or etcd")
    }
    guard BenchOperation(rawValue: op) != nil else {
      throw ValidationError(
        "--op must be one of \(BenchOperation.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    guard ReadLevel(parameter: level) != nil else {
      throw ValidationError("--level must be stale, default or consistent")
    }
    guard ["auto", "leader", "all"].contains(connect) else {
      throw ValidationError("--connect: auto, leader or all")
    }
    guard (1...4096).contains(clients) else { throw ValidationError("--clients must be 1...4096") }
    guard keys >= 1, valueSize >= 1, (1...4096).contains(keySize) else {
      throw ValidationError("--keys, --value-size and --key-size must be positive")
    }
    guard String(keys - 1).utf8.count <= keySize - 1 || keySize >= 2 else {
      throw ValidationError("--key-size too small for --keys")
    }
    guard duration > 0, warmup >= 0, timeout > 0, (1...64).contains(threads) else {
      throw ValidationError("--duration and --timeout must be positive, --threads 1...64")
    }
    if let requests, requests < clients { throw ValidationError("--requests must be at least --clients") }
    guard (0...100).contains(readPercent) else { throw ValidationError("--read-percent must be 0...100") }
  }

  func run() async throws {
    let benchTarget = BenchTarget(rawValue: target)!
    let operation = BenchOperation(rawValue: op)!
    let readLevel = ReadLevel(parameter: level)!
    let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
    var echoGroup: MultiThreadedEventLoopGroup?
    var echoServer: (any Channel)?
    do {
      try await measure(
        group: group, echoGroup: &echoGroup, echoServer: &echoServer, benchTarget: benchTarget,
        operation: operation,
        readLevel: readLevel)
    } catch {
      try? await echoServer?.close().get()
      try? await echoGroup?.shutdownGracefully()
      try? await group.shutdownGracefully()
      throw error
    }
    try? await echoServer?.close().get()
    try? await echoGroup?.shutdownGracefully()
    try? await group.shutdownGracefully()
  }

  private func measure(
    group: MultiThreadedEventLoopGroup, echoGroup: inout MultiThreadedEventLoopGroup?,
    echoServer: inout (any Channel)?, benchTarget: BenchTarget, operation: BenchOperation,
    readLevel: ReadLevel
  ) async throws {

    // Where each client connects.
    var addresses: [String]
    var description: String
    if operation == .echo {
      // The echo server gets its own thread, as a server process would have.
      let serverGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
      echoGroup = serverGroup
      let server = try await ServerBootstrap(group: serverGroup)
        .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        .childChannelInitializer { channel in
          channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(BenchEchoHandler())
          }
        }
        .bind(host: "127.0.0.1", port: 0).get()
      echoServer = server
      let port = server.localAddress!.port!
      addresses = ["127.0.0.1:\(port)"]
      description = "in-process TCP echo on 127.0.0.1:\(port)"
    } else {
      let list = endpoints.list
      guard !list.isEmpty, list.allSatisfy({ splitHostPort($0) != nil }) else {
        throw ValidationError("endpoints must be host:port, comma separated")
      }
      let spread = connect == "all" || (connect == "auto" && operation == .get && readLevel == .stale)
      if spread || operation == .noop && connect != "leader" {
        addresses = list
        description = "spread over \(list.joined(separator: ","))"
      } else {
        let leader = try await findLeader(target: benchTarget, endpoints: list, group: group)
        addresses = [leader]
        description = "leader \(leader)"
      }
    }

    var filler = [UInt8]()
    var fillerRandom = SplitMix64(seed: seed ^ 0xF111)
    let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".utf8)
    for _ in 0..<valueSize { filler.append(alphabet[fillerRandom.below(alphabet.count)]) }

    var plan = BenchPlan(
      target: benchTarget, operation: operation, level: readLevel, keySize: keySize, valueSize: valueSize,
      keys: keys, readPercent: readPercent, seed: seed, clients: clients, idempotencyKeys: idempotencyKeys,
      measureStart: 0, measureEnd: 0, requestsPerClient: nil, populate: false,
      requestTimeoutNanos: UInt64(timeout * 1e9), filler: filler)
    if keys <= 2_000_000 { plan.keyTable = (0..<keys).map { BenchRequestWriter.key($0, size: keySize) } }

    if [.get, .cas, .mixed].contains(operation) && !noPopulate {
      let leader =
        addresses.count == 1
        ? addresses[0] : try await findLeader(target: benchTarget, endpoints: addresses, group: group)
      var populate = plan
      populate.populate = true
      populate.operation = .put
      populate.clients = max(clients, 32)
      populate.measureEnd = .max
      let started = benchNow()
      let (stats, _, _) = try await runClients(
        plan: populate, addresses: [leader], group: group, hardStop: nil)
      let seconds = Double(benchNow() - started) / 1e9
      note(
        "populated \(keys) keys in \(String(format: "%.1f", seconds)) s"
          + errorText(stats.errors, prefix: ", errors: "))
    }

    let start = benchNow()
    plan.measureStart = start + UInt64(warmup * 1e9)
    if let requests {
      plan.measureEnd = .max
      plan.requestsPerClient = (0..<clients).map { requests / clients + ($0 < requests % clients ? 1 : 0) }
    } else {
      plan.measureEnd = plan.measureStart + UInt64(duration * 1e9)
    }
    note(
      "bench: \(benchTarget == .etcd ? "etcd (gRPC-gateway JSON)" : benchTarget.rawValue) \(op)"
        + ([.get, .mixed].contains(operation) ? " level=\(readLevel.rawValue)" : "")
        + ", \(clients) client\(clients == 1 ? "" : "s"), \(description); warm-up \(warmup) s, "
        + (requests.map { "\($0) requests" } ?? "\(duration) s"))
    let hardStop = requests == nil ? plan.measureEnd + UInt64(max(2, min(timeout, 5)) * 1e9) : nil
    let (stats, cpu, serverCPU) = try await runClients(
      plan: plan, addresses: addresses, group: group, hardStop: hardStop)

    let window: Double
    if requests != nil {
      window = stats.lastEnd > plan.measureStart ? Double(stats.lastEnd - plan.measureStart) / 1e9 : 0
    } else {
      window = duration
    }
    let report = BenchReport(
      target: benchTarget, operation: operation, level: readLevel, clients: clients, connectedTo: description,
      keySize: keySize, valueSize: valueSize, keys: keys, seed: seed, warmup: warmup, window: window,
      threads: threads, stats: stats, cpuSeconds: cpu, serverCPUSeconds: serverCPU)
    if json {
      print(report.json())
    } else {
      print(report.text())
    }
  }

  /// Runs the clients of `plan` to completion; returns their merged stats and this process's CPU
  /// seconds over the measured window.
  private func runClients(
    plan: BenchPlan, addresses: [String], group: MultiThreadedEventLoopGroup, hardStop: UInt64?
  )
    async throws -> (BenchStats, Double, Double?)
  {
    var clientsByLoop: [ObjectIdentifier: [BenchClient]] = [:]
    var all: [BenchClient] = []
    let progress = BenchProgress()
    for k in 0..<plan.clients {
      let (host, port) = splitHostPort(addresses[k % addresses.count])!
      let loop = group.next()
      let client = BenchClient(
        index: k, plan: plan, host: host, port: port, eventLoop: loop, progress: progress)
      all.append(client)
      clientsByLoop[ObjectIdentifier(loop), default: []].append(client)
    }
    let sweepers = clientsByLoop.values.map { clients in
      let loop = clients[0].eventLoop
      return loop.scheduleRepeatedTask(initialDelay: .milliseconds(250), delay: .milliseconds(250)) { _ in
        let now = benchNow()
        for client in clients { client.checkTimeout(now: now) }
      }
    }
    defer { for sweeper in sweepers { sweeper.cancel() } }
    let clients = all
    let finished = EventLoopFuture.andAllComplete(clients.map(\.finishedFuture), on: group.next())
    for client in all { client.start() }
    let reporter = plan.populate ? nil : Task { await Self.report(progress, plan: plan) }
    defer { reporter?.cancel() }

    var cpuAtStart = benchCPUSeconds()
    var serverAtStart = serverCPUSeconds()
    if !plan.populate {
      try await sleep(until: plan.measureStart)
      cpuAtStart = benchCPUSeconds()
      serverAtStart = serverCPUSeconds()
    }
    var cpuAtEnd: Double?
    var serverAtEnd: Double?
    if let hardStop {
      try await sleep(until: plan.measureEnd)
      cpuAtEnd = benchCPUSeconds()
      serverAtEnd = serverCPUSeconds()
      let stopper = group.next().scheduleTask(in: .nanoseconds(Int64(hardStop - min(hardStop, benchNow())))) {
        for client in clients { client.forceStop() }
      }
      try await finished.get()
      stopper.cancel()
    } else {
      try await finished.get()
    }
    let cpu = (cpuAtEnd ?? benchCPUSeconds()) - cpuAtStart
    let serverCPU = (serverAtEnd ?? serverCPUSeconds()).flatMap { end in serverAtStart.map { end - $0 } }
    var merged = BenchStats()
    for client in all {
      merged.merge(try await client.eventLoop.submit { client.stats }.get())
    }
    return (merged, cpu, serverCPU)
  }

  /// Prints a live line while the clients run, to stderr so that the results on stdout stay clean:
  /// rewritten in place every second on a terminal, a plain line every 5 s otherwise.
  private static func report(_ progress: BenchProgress, plan: BenchPlan) async {
    let terminal = isatty(STDERR_FILENO) != 0
    let interval = terminal ? 1.0 : 5.0
    var last = (completed: 0, at: benchNow())
    while !Task.isCancelled {
      try? await Task.sleep(for: .milliseconds(Int64(interval * 1000)))
      guard !Task.isCancelled else { break }
      let now = benchNow()
      let completed = progress.completed.load(ordering: .relaxed)
      let line: String
      if now < plan.measureStart {
        line = "bench: warming up"
      } else {
        let elapsed = Double(now - plan.measureStart) / 1e9
        // Only measured operations are counted: the rate's window starts at the measured window.
        let since = max(last.at, plan.measureStart)
        let rate = Double(completed - last.completed) / max(1e-9, Double(now - since) / 1e9)
        line = String(
          format: "bench: %.0f s, %d ops, %.0f ops/s now, %d errors", elapsed, completed, rate,
          progress.errors.load(ordering: .relaxed))
      }
      last = (completed, now)
      FileHandle.standardError.write(Data((terminal ? "\r\u{1B}[K\(line)" : "\(line)\n").utf8))
    }
    if terminal { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
  }

  /// User plus system CPU seconds of the watched server processes, or nil if none is watched or one
  /// cannot be read.
  private func serverCPUSeconds() -> Double? {
    guard let watchPids else { return nil }
    let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
    var total = 0.0
    for pid in watchPids.split(separator: ",") {
      // Fields after the ")" that closes the command name: state is field 3, utime 14, stime 15.
      guard
        let text = try? String(
          contentsOfFile: "/proc/\(pid.trimmingCharacters(in: .whitespaces))/stat", encoding: .utf8),
        let close = text.lastIndex(of: ")")
      else { return nil }
      let fields = text[text.index(after: close)...].split(separator: " ")
      guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else {
        return nil
      }
      total += (user + system) / ticksPerSecond
    }
    return total
  }

  private func sleep(until deadline: UInt64) async throws {
    let now = benchNow()
    if deadline > now { try await Task.sleep(nanoseconds: deadline - now) }
  }

  /// The leader's HTTP address: raftdb's /status names it; etcd's maintenance status names the
  /// leader's member id, which is matched against each endpoint's own id.
  private func findLeader(target: BenchTarget, endpoints: [String], group: any EventLoopGroup) async throws
    -> String
  {
    for attempt in 0..<50 {
      if attempt > 0 { try await Task.sleep(for: .milliseconds(200)) }
      switch target {
      case .raftdb:
        let client = RaftDBClient(endpoints: endpoints, group: group)
        defer { Task { await client.close() } }
        for endpoint in endpoints {
          guard let status = try? await client.status(endpoint: endpoint) else { continue }
          if status.state == "leader" { return endpoint }
          if let leader = status.leader?.haddr { return leader }
        }
      case .etcd:
        for endpoint in endpoints {
          guard let (host, port) = splitHostPort(endpoint),
            let connection = try? await HTTPConnection.connect(host: host, port: port, group: group)
          else { continue }
          defer { Task { await connection.close() } }
          let request = HTTPRequestData(
            method: .POST, path: "/v3/maintenance/status", headers: [("Content-Type", "application/json")],
            body: Array("{}".utf8))
          guard let response = try? await connection.send(request, timeout: .seconds(2)),
            response.status == .ok,
            let object = try? JSONParser.parse(response.body), let header = object["header"]
          else { continue }
          // The gateway writes 64-bit ids as strings; accept numbers too.
          let member = idText(header["member_id"])
          if !member.isEmpty && member == idText(object["leader"]) { return endpoint }
        }
      }
    }
    throw ValidationError("no leader found through \(endpoints.joined(separator: ","))")
  }

  private func idText(_ value: JSONValue?) -> String {
    switch value {
    case .string(let text), .number(let text): text
    default: ""
    }
  }

  private func note(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
  }
}

func errorText(_ errors: [String: Int], prefix: String) -> String {
  errors.isEmpty
    ? "" : prefix + errors.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
}

/// The figures of one run, as text for people and JSON for scripts.
struct BenchReport {
  var target: BenchTarget
  var operation: BenchOperation
  var level: ReadLevel
  var clients: Int
  var connectedTo: String
  var keySize: Int
  var valueSize: Int
  var keys: Int
  var seed: UInt64
  var warmup: Double
  var window: Double
  var threads: Int
  var stats: BenchStats
  var cpuSeconds: Double
  var serverCPUSeconds: Double?

  var opsPerSecond: Double { window > 0 ? Double(stats.completed) / window : 0 }
  var cpuPercentOfCore: Double { window > 0 ? cpuSeconds / window * 100 : 0 }
  var cpuMicrosPerOp: Double { stats.completed > 0 ? cpuSeconds / Double(stats.completed) * 1e6 : 0 }
  func percentile(_ p: Double) -> UInt64 { stats.completed > 0 ? stats.histogram.valueAtPercentile(p) : 0 }
  var maxLatency: UInt64 { stats.completed > 0 ? stats.histogram.max : 0 }

  var shape: String {
    var text = operation.rawValue
    if operation == .get || operation == .mixed { text += "(\(level.rawValue))" }
    return text
  }

  func text() -> String {
    let targetName = target == .etcd ? "etcd via gRPC-gateway JSON" : "raftdb HTTP API"
    var lines = [
      "\(shape) on \(operation == .echo ? "loopback TCP echo" : targetName), \(clients) client\(clients == 1 ? "" : "s") (\(connectedTo)), "
        + "key \(keySize) B, value \(valueSize) B, \(keys) keys, seed \(seed)",
      String(
        format: "  throughput  %.0f ops/s (%d ops in %.2f s after %.1f s warm-up)", opsPerSecond,
        stats.completed, window, warmup),
      "  latency µs  p50 \(percentile(50))  p90 \(percentile(90))  p99 \(percentile(99))  "
        + "p99.9 \(percentile(99.9))  max \(maxLatency)"
        + String(format: "  mean %.0f", stats.completed > 0 ? stats.histogram.mean : 0),
      "  errors      " + (stats.errors.isEmpty ? "none" : errorText(stats.errors, prefix: "")),
      String(
        format:
          "  generator   %.2f s CPU (user+sys) = %.1f%% of one core, %.1f µs per operation, %d event-loop thread(s)",
        cpuSeconds, cpuPercentOfCore, cpuMicrosPerOp, threads),
    ]
    if let serverCPUSeconds {
      lines.append(
        String(
          format:
            "  server      %.2f s CPU (user+sys, watched pids) = %.1f%% of one core, %.1f µs per operation",
          serverCPUSeconds, window > 0 ? serverCPUSeconds / window * 100 : 0,
          stats.completed > 0 ? serverCPUSeconds / Double(stats.completed) * 1e6 : 0))
    }
    if operation == .cas {
      lines.append("  cas         \(stats.casFailed) comparisons failed (counted as completed)")
    }
    if operation == .mixed { lines.append("  mix         \(stats.reads) reads, \(stats.writes) writes") }
    if stats.redirects > 0 || stats.reconnects > 0 {
      lines.append("  connections \(stats.redirects) redirects followed, \(stats.reconnects) reconnects")
    }
    return lines.joined(separator: "\n")
  }

  /// One line, compact with sorted keys (as JSONSerialization's `.sortedKeys` wrote it before).
  func json() -> String {
    var members: [(key: String, value: JSONValue)] = [
      ("target", JSONValue(target.rawValue)),
      (
        "path",
        JSONValue(
          operation == .echo
            ? "tcp-echo" : (target == .etcd ? "etcd-grpc-gateway-json" : "raftdb-http-json"))
      ),
      ("op", JSONValue(operation.rawValue)),
      ("level", JSONValue(level.rawValue)),
      ("shape", JSONValue(shape)),
      ("clients", JSONValue(clients)),
      ("connected_to", JSONValue(connectedTo)),
      ("key_size", JSONValue(keySize)),
      ("value_size", JSONValue(valueSize)),
      ("keys", JSONValue(keys)),
      ("seed", JSONValue(seed)),
      ("warmup_s", JSONValue(warmup)),
      ("window_s", JSONValue(window)),
      ("ops", JSONValue(stats.completed)),
      ("ops_per_sec", JSONValue((opsPerSecond * 10).rounded() / 10)),
      (
        "latency_us",
        JSONValue([
          "p50": JSONValue(percentile(50)), "p90": JSONValue(percentile(90)),
          "p99": JSONValue(percentile(99)),
          "p99_9": JSONValue(percentile(99.9)), "max": JSONValue(maxLatency),
          "mean": JSONValue(stats.completed > 0 ? (stats.histogram.mean * 10).rounded() / 10 : 0),
        ])
      ),
      ("errors", .object(stats.errors.map { (key: $0.key, value: JSONValue($0.value)) })),
      ("error_count", JSONValue(stats.errors.values.reduce(0, +))),
      ("cas_failed", JSONValue(stats.casFailed)),
      ("reads", JSONValue(stats.reads)),
      ("writes", JSONValue(stats.writes)),
      ("redirects", JSONValue(stats.redirects)),
      ("reconnects", JSONValue(stats.reconnects)),
      (
        "generator",
        JSONValue([
          "threads": JSONValue(threads),
          "cpu_seconds": JSONValue((cpuSeconds * 1000).rounded() / 1000),
          "cpu_percent_of_core": JSONValue((cpuPercentOfCore * 10).rounded() / 10),
          "cpu_us_per_op": JSONValue((cpuMicrosPerOp * 100).rounded() / 100),
        ])
      ),
    ]
    if let serverCPUSeconds {
      members.append(
        (
          "server",
          JSONValue([
            "cpu_seconds": JSONValue((serverCPUSeconds * 1000).rounded() / 1000),
            "cpu_percent_of_core": JSONValue(
              window > 0 ? (serverCPUSeconds / window * 1000).rounded() / 10 : 0),
            "cpu_us_per_op": JSONValue(
              stats.completed > 0 ? (serverCPUSeconds / Double(stats.completed) * 1e8).rounded() / 100 : 0),
          ])
        ))
    }
    return String(decoding: JSONValue.object(members).serialized(sortingKeys: true), as: UTF8.self)
  }
}
