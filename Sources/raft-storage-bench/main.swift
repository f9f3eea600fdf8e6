// Storage benchmark (BENCHMARKS.md, "Storage (WAL)"): the physical limit of small synced writes on
// the data directory's file system, and what the WAL achieves against it with group commit.
//
//   swift build -c release --scratch-path .build-storage --product raft-storage-bench
//   .build-storage/release/raft-storage-bench [--dir PATH] [--rounds N] [--seconds S]
//
// --dir picks the file system to measure (a fresh subdirectory is created in it and removed
// afterwards); by default a temporary directory under /tmp. Each of the five measurements runs for
// --seconds in each of --rounds interleaved rounds, so that drift of a shared machine affects all of
// them alike.

import Logging
import Raft
import RaftStorage

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

struct Options {
  var directory = "/tmp"
  var rounds = 3
  var seconds = 2.0

  init(_ arguments: [String]) {
    var k = 1
    while k < arguments.count {
      let value = k + 1 < arguments.count ? arguments[k + 1] : ""
      switch arguments[k] {
      case "--dir": directory = value
      case "--rounds": rounds = max(1, Int(value) ?? rounds)
      case "--seconds": seconds = max(0.1, Double(value) ?? seconds)
      default:
        print("usage: raft-storage-bench [--dir PATH] [--rounds N] [--seconds S]")
        exit(2)
      }
      k += 2
    }
  }
}

func now() -> UInt64 {
  var time = timespec()
  clock_gettime(CLOCK_MONOTONIC, &time)
  return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

func check(_ result: Int, _ what: String) {
  if result < 0 {
    print("\(what) failed: errno \(errno)")
    exit(1)
  }
}

/// Latencies of one kind of operation across rounds.
struct Sample {
  var latencies: [UInt64] = []
  /// For WAL batches: the time spent in `write` alone (encoding, checksums, the pwrite), which is
  /// what the software costs on top of the device's sync.
  var writeLatencies: [UInt64] = []
  var elapsed: UInt64 = 0
  var items = 0

  mutating func add(latency: UInt64, items: Int, write: UInt64? = nil) {
    latencies.append(latency)
    if let write { writeLatencies.append(write) }
    elapsed += latency
    self.items += items
  }

  var writeMedian: Double {
    guard !writeLatencies.isEmpty else { return 0 }
    return Double(writeLatencies.sorted()[writeLatencies.count / 2]) / 1000
  }

  var operationsPerSecond: Double { Double(latencies.count) / (Double(elapsed) / 1e9) }
  var itemsPerSecond: Double { Double(items) / (Double(elapsed) / 1e9) }

  func percentile(_ p: Double) -> Double {
    let sorted = latencies.sorted()
    guard !sorted.isEmpty else { return 0 }
    return Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1000
  }
}

/// pwrite of 256 bytes + fdatasync for `seconds`: appending to a growing file, or overwriting a file
/// written (and synced) in full beforehand, which needs no metadata update per sync.
func rawLoop(directory: String, seconds: Double, preallocated: Bool, into sample: inout Sample) {
  let path = directory + "/raw-\(preallocated ? "overwrite" : "append")"
  unlink(path)
  let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
  check(Int(fd), "open \(path)")
  defer {
    close(fd)
    unlink(path)
  }
  var record = [UInt8](repeating: 0xA5, count: 256)
  // The overwritten file is a 16 MiB ring, written and synced before the clock starts.
  let ring = 16 << 20
  if preallocated {
    let zeros = [UInt8](repeating: 0, count: 1 << 20)
    for offset in stride(from: 0, to: ring, by: zeros.count) {
      check(zeros.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }, "pwrite")
    }
    check(Int(fsync(fd)), "fsync")
  }
  let deadline = now() + UInt64(seconds * 1e9)
  var k = 0
  while now() < deadline {
    record[0] = UInt8(truncatingIfNeeded: k)
    let offset = preallocated ? (k * 256) % ring : k * 256
    let start = now()
    check(record.withUnsafeBytes { pwrite(fd, $0.baseAddress, 256, off_t(offset)) }, "pwrite")
    check(Int(fdatasync(fd)), "fdatasync")
    sample.add(latency: now() - start, items: 1)
    k += 1
  }
}

/// WAL appends of 256-byte entries in batches of `batchSize`, each written and synced, for `seconds`,
/// into a fresh data directory (removed afterwards, so the rounds do not fill the disk).
func walLoop(directory: String, batchSize: Int, seconds: Double, into sample: inout Sample) {
  let path = directory + "/data-\(batchSize)"
  var logger = Logger(label: "raft-storage-bench")
  logger.logLevel = .error
  let data = [UInt8](repeating: 0x5A, count: 256)
  do throws(StorageError) {
    let storage = try FileStorage(directory: path, logger: logger)
    defer {
      storage.close()
      _ = system("rm -rf '\(path)'")
    }
    _ = try storage.recover()
    var next: UInt64 = 1
    let deadline = now() + UInt64(seconds * 1e9)
    while now() < deadline {
      let entries = (0..<UInt64(batchSize)).map { LogEntry(index: next + $0, term: 1, data: data) }
      next += UInt64(batchSize)
      let start = now()
      try storage.write(PersistBatch(entries: entries))
      let written = now()
      try storage.sync()
      sample.add(latency: now() - start, items: batchSize, write: written - start)
    }
  } catch {
    print("WAL benchmark failed: \(error)")
    exit(1)
  }
}

func describeMachine(_ directory: String) -> String {
  var name = utsname()
  uname(&name)
  let release = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
  // The file system is the one mounted at the longest mount point that prefixes the directory.
  var type = "unknown file system"
  var best = 0
  if let mounts = fopen("/proc/mounts", "r") {
    defer { fclose(mounts) }
    var line = [CChar](repeating: 0, count: 4096)
    while fgets(&line, Int32(line.count), mounts) != nil {
      let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
      let fields = text.split(separator: " ")
      guard fields.count >= 3 else { continue }
      let point = String(fields[1])
      let matches = directory == point || directory.hasPrefix(point == "/" ? "/" : point + "/")
      if matches && point.count > best {
        best = point.count
        type = "\(fields[2]) (\(fields[0]) mounted at \(point))"
      }
    }
  }
  return "\(sysconf(Int32(_SC_NPROCESSORS_ONLN))) CPUs, kernel \(release), \(directory) on \(type)"
}

func format(_ value: Double, _ digits: Int = 0) -> String {
  var text = String(Int((value * pow(10, Double(digits))).rounded()))
  if digits > 0 {
    while text.count <= digits { text = "0" + text }
    text.insert(".", at: text.index(text.endIndex, offsetBy: -digits))
  }
  var grouped = ""
  let integer = digits > 0 ? String(text[..<text.firstIndex(of: ".")!]) : text
  for (k, character) in integer.reversed().enumerated() {
    if k > 0 && k % 3 == 0 { grouped.insert(",", at: grouped.startIndex) }
    grouped.insert(character, at: grouped.startIndex)
  }
  return digits > 0 ? grouped + String(text[text.firstIndex(of: ".")!...]) : grouped
}

let options = Options(CommandLine.arguments)
var template = Array("\(options.directory)/raft-storage-bench-XXXXXX".utf8CString)
guard let created = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
  print("cannot create a directory in \(options.directory): errno \(errno)")
  exit(1)
}
let workDirectory = String(cString: created)
defer { _ = system("rm -rf '\(workDirectory)'") }
print("raft-storage-bench: \(describeMachine(workDirectory))")

// Warm up the disk, the page cache and the code.
var warmup = Sample()
rawLoop(directory: workDirectory, seconds: 0.3, preallocated: true, into: &warmup)
walLoop(directory: workDirectory, batchSize: 16, seconds: 0.3, into: &warmup)

var rawAppend = Sample()
var rawOverwrite = Sample()
var wal: [Int: Sample] = [1: Sample(), 16: Sample(), 256: Sample()]
for round in 1...options.rounds {
  rawLoop(directory: workDirectory, seconds: options.seconds, preallocated: false, into: &rawAppend)
  rawLoop(directory: workDirectory, seconds: options.seconds, preallocated: true, into: &rawOverwrite)
  for size in [1, 16, 256] {
    walLoop(directory: workDirectory, batchSize: size, seconds: options.seconds, into: &wal[size]!)
  }
  print("round \(round)/\(options.rounds) done")
}

let physical = max(rawAppend.operationsPerSecond, rawOverwrite.operationsPerSecond)
print("")
print("| measurement | ops/s | entries/s | p50 µs | p99 µs | write() p50 µs |")
print("|---|---:|---:|---:|---:|---:|")
for (label, sample) in [
  ("raw pwrite 256 B + fdatasync, appending", rawAppend),
  ("raw pwrite 256 B + fdatasync, overwriting a written file", rawOverwrite),
] {
  print(
    "| \(label) | \(format(sample.operationsPerSecond)) | — | \(format(sample.percentile(0.5), 1)) | \(format(sample.percentile(0.99), 1)) | — |"
  )
}
for size in [1, 16, 256] {
  let sample = wal[size]!
  print(
    "| WAL, batches of \(size) × 256 B, write + sync | \(format(sample.operationsPerSecond)) batches/s | \(format(sample.itemsPerSecond)) | \(format(sample.percentile(0.5), 1)) | \(format(sample.percentile(0.99), 1)) | \(format(sample.writeMedian, 1)) |"
  )
}
print("")
let ratio = wal[1]!.operationsPerSecond / physical
print(
  "batch-of-1 syncs/s ÷ raw fdatasync rate (the faster raw loop): \(format(ratio * 100, 1))% (target ≥ 80%)"
)
print(
  "batch-of-1 ÷ appending raw loop: \(format(wal[1]!.operationsPerSecond / rawAppend.operationsPerSecond * 100, 1))%, ÷ overwriting raw loop: \(format(wal[1]!.operationsPerSecond / rawOverwrite.operationsPerSecond * 100, 1))%"
)
print("batch-of-256 entries/s: \(format(wal[256]!.itemsPerSecond)) (target ≥ 200,000)")
