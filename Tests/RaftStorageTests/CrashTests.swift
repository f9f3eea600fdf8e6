import Dispatch
import Foundation
import Raft
@_spi(Testing) import RaftStorage
import Synchronization
import Testing

/// The real thing: a child process writing through FileStorage is killed with SIGKILL at random
/// moments, and every claim it made before dying must hold when the directory is reopened
/// (`Sources/wal-crash-writer/main.swift` describes the claims).
///
/// SIGKILL loses no page cache, so this tests the process-level guarantees (atomic batches,
/// truncation and reset ordering, recovery of a write cut off mid-way, repeated restarts); torn
/// writes at the disk level are covered by TornTailTests.
@Suite struct CrashTests {
  static let lanes = 4
  static let killsPerLane = 55
  /// Held while spawning and while a lane has a directory open: between fork and exec a child holds
  /// copies of all the parent's descriptors (close-on-exec ones included), so a spawn in one lane
  /// would briefly hold another lane's directory lock.
  static let descriptorLock = Mutex<Void>(())

  /// The claims a writer has made so far, across all its lives.
  struct Claims {
    var durable: LogPosition?
    var snapshot: LogPosition?
    var hardState: (term: UInt64, vote: UInt64)?
    var lines = 0

    /// Takes the complete lines of one run's output (a kill may cut the last one short).
    mutating func read(_ output: String) {
      let complete =
        output.hasSuffix("\n") ? output : String(output[..<(output.lastIndex(of: "\n") ?? output.startIndex)])
      for line in complete.split(separator: "\n") {
        let fields = line.split(separator: " ")
        guard fields.count == 3, let a = UInt64(fields[1]), let b = UInt64(fields[2]) else { continue }
        lines += 1
        switch fields[0] {
        case "D": durable = LogPosition(index: a, term: b)
        case "S": snapshot = LogPosition(index: max(a, snapshot?.index ?? 0), term: b)
        case "H": hardState = (a, b)
        default: break
        }
      }
    }
  }

  static func content(index: UInt64, term: UInt64) -> [UInt8] {
    let size = Int((index &* 2_654_435_761 ^ term &* 40_503) % 300)
    return Entries.data(index: index, term: term, size: size)
  }

  /// What is wrong with the directory given the claims (empty when all is well).
  static func verify(_ path: String, _ claims: Claims) -> [String] {
    var problems: [String] = []
    do {
      let (storage, recovered) = try reopen(path, options: FileStorageOptions(segmentSizeBytes: 32 << 10))
      let entries = recovered.stored.entries
      let snapshot = recovered.stored.snapshot
      if !Entries.isValidLog(entries) { problems.append("the recovered log is not a valid Raft log") }
      if let first = entries.first, first.index != snapshot.index + 1 {
        problems.append("the log starts at \(first.index) after snapshot \(snapshot.index)")
      }
      if let bad = entries.first(where: { $0.data != content(index: $0.index, term: $0.term) }) {
        problems.append("entry \(bad.position) has wrong content")
      }
      if let claimed = claims.snapshot, snapshot.index < claimed.index {
        problems.append("snapshot \(snapshot.position) is older than the committed \(claimed)")
      }
      if let durable = claims.durable, durable.index > snapshot.index {
        let found = entries.first { $0.index == durable.index }
        if found?.term != durable.term {
          problems.append(
            "durable entry \(durable) lost: log ends at \(entries.last.map { "\($0.position)" } ?? "snapshot \(snapshot.position)")"
          )
        }
      }
      let hard = recovered.stored.hardState
      if let claimed = claims.hardState,
        hard.term < claimed.term || (hard.term == claimed.term && (hard.vote?.rawValue ?? 0) != claimed.vote)
      {
        problems.append("hard state \(hard) forgets term \(claimed.term) vote \(claimed.vote)")
      }
      if let metadata = recovered.snapshot {
        let source = try storage.snapshots.open(metadata)
        var data: [UInt8] = []
        while let chunk = try source.read(maxBytes: 1 << 16) { data += chunk }
        source.close()
        if data != content(index: metadata.index ^ 0xABCD, term: metadata.term) {
          problems.append("snapshot \(metadata.position) has wrong content")
        }
      }
      storage.close()
      // Recovery repaired whatever the kill left; a second open finds nothing more to do.
      let (again, second) = try reopen(path, options: FileStorageOptions(segmentSizeBytes: 32 << 10))
      again.close()
      if !second.warnings.isEmpty { problems.append("second recovery warned: \(second.warnings)") }
      if second.stored.entries != entries { problems.append("second recovery returned a different log") }
    } catch {
      problems.append("recovery failed: \(error)")
    }
    return problems
  }

  /// The crash writer sits next to the test bundle, in the build products directory.
  static func writerPath() throws -> String {
    let executable =
      (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
      ?? Bundle.main.executablePath ?? CommandLine.arguments[0]
    var directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
    for _ in 0..<4 {
      let candidate = directory.appendingPathComponent("wal-crash-writer").path
      if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
      directory = directory.deletingLastPathComponent()
    }
    throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: "wal-crash-writer near \(executable)"])
  }

  /// Starts the writer with stdout and stderr going to files; returns its pid.
  static func spawn(_ writer: String, directory: String, seed: UInt64, output: String, errors: String)
    -> pid_t?
  {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_addopen(&actions, 2, errors, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup(writer), strdup(directory), strdup(String(seed)), nil]
    defer { argv.forEach { free($0) } }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, writer, &actions, nil, argv, environ)
    return result == 0 ? pid : nil
  }

  struct LaneReport: Sendable {
    var kills = 0
    var claims = 0
    var lastDurable = "-"
    var problems: [String] = []
  }

  static func runLane(_ lane: Int, writer: String, deadline: ContinuousClock.Instant) -> LaneReport {
    var report = LaneReport()
    let base = TemporaryDirectory("raftstorage-crash")
    let data = base.path + "/data"
    var claims = Claims()
    var random = SplitMix64(seed: UInt64(lane) &* 7919 &+ UInt64(getpid()))
    for kill in 0..<killsPerLane where ContinuousClock.now < deadline {
      let output = base.path + "/out-\(kill).txt"
      let errors = base.path + "/err-\(kill).txt"
      let seed = random.next()
      let spawned = descriptorLock.withLock { _ in
        spawn(writer, directory: data, seed: seed, output: output, errors: errors)
      }
      guard let pid = spawned else {
        report.problems.append("lane \(lane): cannot start \(writer)")
        break
      }
      // From "killed while still recovering" to "well into writing".
      usleep(UInt32(5_000 + random.next() % 150_000))
      Glibc.kill(pid, SIGKILL)
      var status: Int32 = 0
      waitpid(pid, &status, 0)
      let signal = status & 0x7F
      claims.read(String(decoding: Disk.read(output), as: UTF8.self))
      if signal != SIGKILL {
        let message = String(decoding: Disk.read(errors), as: UTF8.self)
        report.problems.append(
          "lane \(lane) run \(kill): writer exited by itself (status \(status)): \(message)")
        break
      }
      report.kills += 1
      let problems = descriptorLock.withLock { _ in verify(data, claims) }
      if !problems.isEmpty {
        report.problems += problems.map { "lane \(lane) after kill \(kill): \($0)" }
        break
      }
    }
    report.claims = claims.lines
    report.lastDurable = claims.durable.map { "\($0)" } ?? "-"
    return report
  }

  @Test func killNineNeverLosesAcknowledgedWrites() throws {
    let writer = try Self.writerPath()
    let deadline = ContinuousClock.now + .seconds(100)
    let reports = Mutex<[LaneReport]>([])
    DispatchQueue.concurrentPerform(iterations: Self.lanes) { lane in
      let report = Self.runLane(lane, writer: writer, deadline: deadline)
      reports.withLock { $0.append(report) }
    }
    let all = reports.withLock { $0 }
    let kills = all.reduce(0) { $0 + $1.kills }
    print(
      "wal crash test: \(kills) SIGKILLs in \(Self.lanes) directories, \(all.reduce(0) { $0 + $1.claims }) claims checked; "
        + "last durable positions \(all.map(\.lastDurable).joined(separator: ", "))")
    for problem in all.flatMap(\.problems) { Issue.record("\(problem)") }
    #expect(kills >= 200)
  }
}
