import Testing

@testable import KVStore

#if canImport(Glibc)
  import Glibc
#endif

private let isReleaseBuild: Bool = {
  #if DEBUG
    return false
  #else
    return true
  #endif
}()

/// Figures for docs/STATE_MACHINE.md. They print and never assert timings (machines differ); run
/// alone for clean RSS numbers, since other suites allocate in parallel:
/// `swift test -c release --filter KVStoreTests.MeasurementTests` (`KVSTORE_MEASURE_KEYS` sets the
/// number of keys, 100,000 by default).
@Suite(.serialized, .enabled(if: isReleaseBuild, "measurements are meaningful in release builds only"))
struct MeasurementTests {
  static var keyCount: Int {
    #if canImport(Glibc)
      if let value = getenv("KVSTORE_MEASURE_KEYS"), let count = Int(String(cString: value)) { return count }
    #endif
    return 100_000
  }

  /// Resident set size from /proc/self/statm, or nil where there is no procfs.
  static func residentBytes() -> Int? {
    #if canImport(Glibc)
      let descriptor = open("/proc/self/statm", O_RDONLY)
      guard descriptor >= 0 else { return nil }
      defer { close(descriptor) }
      var buffer = [UInt8](repeating: 0, count: 128)
      let count = read(descriptor, &buffer, buffer.count)
      guard count > 0 else { return nil }
      // "size resident shared ...", in pages.
      let fields = buffer[..<count].split(separator: UInt8(ascii: " "))
      guard fields.count >= 2, let pages = Int(String(decoding: fields[1], as: UTF8.self)) else { return nil }
      return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    #else
      return nil
    #endif
  }

  /// 16-byte keys, 256-byte values: the benchmark's shape.
  static func request(_ i: Int, millis: UInt64 = 0) -> [UInt8] {
    var key = "k"
    let digits = String(i)
    key += String(repeating: "0", count: 15 - digits.utf8.count) + digits
    let value = String(repeating: Character(UnicodeScalar(UInt8(97 + i % 26))), count: 256)
    return KVRequest(command: put(key, value), proposedAtMillis: millis).encoded()
  }

  static func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
  }

  @Test func bytesPerKey() throws {
    let count = Self.keyCount
    let rawBytes = count * (16 + 256)
    let before = Self.residentBytes()
    let machine = KVStateMachine()
    for i in 0..<count { _ = machine.apply(index: UInt64(i + 1), data: Self.request(i)) }
    let after = Self.residentBytes()
    #expect(machine.count == count)
    #expect(machine.dataBytes == rawBytes)

    print(
      "[kv-measure] \(count) keys (16 B key, 256 B value, raw \(rawBytes / count) B/key):",
      before.flatMap { before in
        after.map {
          "RSS growth \(($0 - before) / count) B/key, ratio to raw \(Double($0 - before) / Double(rawBytes))"
        }
      }
        ?? "RSS unavailable")
    withExtendedLifetime(machine) {}
  }

  @Test func applyThroughput() {
    let count = Self.keyCount
    let requests = (0..<count).map { Self.request($0, millis: UInt64($0)) }
    let machine = KVStateMachine()
    let clock = ContinuousClock()
    var index: UInt64 = 0
    let inserts = clock.measure {
      for request in requests {
        index += 1
        _ = machine.apply(index: index, data: request)
      }
    }
    let updates = clock.measure {
      for request in requests {
        index += 1
        _ = machine.apply(index: index, data: request)
      }
    }
    let snapshot = machine.snapshot()
    let updatesWithSnapshotHeld = clock.measure {
      for request in requests.prefix(count / 10) {
        index += 1
        _ = machine.apply(index: index, data: request)
      }
    }
    let idempotent = (0..<count).map { i in
      KVRequest(
        command: put("idem/\(i % 1000)", "v"), idempotencyKey: "req-\(i)", proposedAtMillis: UInt64(i)
      ).encoded()
    }
    let withKeys = clock.measure {
      for request in idempotent {
        index += 1
        _ = machine.apply(index: index, data: request)
      }
    }
    func rate(_ n: Int, _ duration: Duration) -> Int { Int(Double(n) / Self.seconds(duration)) }
    print(
      "[kv-measure] applies/s with 16 B keys and 256 B values:",
      "inserts \(rate(count, inserts)), updates \(rate(count, updates)),",
      "updates while a snapshot shares the trie \(rate(count / 10, updatesWithSnapshotHeld)),",
      "small puts with idempotency keys \(rate(count, withKeys))")
    withExtendedLifetime(snapshot) {}
  }

  @Test func snapshotThroughput() throws {
    let count = Self.keyCount
    let machine = KVStateMachine()
    for i in 0..<count { _ = machine.apply(index: UInt64(i + 1), data: Self.request(i)) }
    let clock = ContinuousClock()
    var chunks: [[UInt8]] = []
    var total = 0
    let serialize = clock.measure {
      machine.snapshot().serialize(chunkBytes: 1 << 20) {
        chunks.append($0)
        total += $0.count
      }
    }
    let restored = KVStateMachine()
    let restore = try clock.measure {
      var iterator = chunks.makeIterator()
      try restored.restore(appliedIndex: UInt64(count)) { iterator.next() }
    }
    #expect(restored.count == count)
    print(
      "[kv-measure] snapshot of \(count) keys: \(total / count) B/key in \(chunks.count) chunks;",
      "serialize \(Self.seconds(serialize)) s, restore \(Self.seconds(restore)) s")
  }
}
