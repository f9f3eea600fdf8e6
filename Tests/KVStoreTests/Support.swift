import Raft
import Testing

@testable import KVStore

/// Applies requests at consecutive log indexes with a controllable proposal clock, the way a node
/// feeds committed entries.
final class Driver {
  let machine: KVStateMachine
  private(set) var index: UInt64 = 0
  var nowMillis: UInt64 = 1_000

  init(limits: KVLimits = KVLimits(), supportedClusterVersion: UInt32 = ClusterVersion.latest) {
    machine = KVStateMachine(limits: limits, supportedClusterVersion: supportedClusterVersion)
  }

  @discardableResult
  func apply(_ command: KVCommand, idempotencyKey: String? = nil, at millis: UInt64? = nil) -> KVApplyOutcome
  {
    let request = KVRequest(
      command: command, idempotencyKey: idempotencyKey, proposedAtMillis: millis ?? nowMillis)
    return applyBytes(request.encoded())
  }

  @discardableResult
  func applyBytes(_ bytes: [UInt8]) -> KVApplyOutcome {
    index += 1
    return machine.apply(index: index, data: bytes)
  }

  func advance() {
    index += 1
    machine.advance(to: index)
  }

  /// Continues from a restored state.
  func resume(at index: UInt64) { self.index = index }
}

func put(_ pairs: KeyValuePairs<String, String>) -> KVCommand {
  .put(pairs.map { KeyValue(key: $0.key, value: $0.value) })
}

func put(_ key: String, _ value: String) -> KVCommand { .put([KeyValue(key: key, value: value)]) }

func record(_ value: String, create: UInt64, mod: UInt64, version: UInt64) -> KVRecord {
  KVRecord(value: value, createRevision: create, modRevision: mod, version: version)
}

/// Serializes a snapshot into chunks, as a sender would.
func serializedChunks(_ snapshot: KVSnapshot, chunkBytes: Int = 4096) -> [[UInt8]] {
  var chunks: [[UInt8]] = []
  snapshot.serialize(chunkBytes: chunkBytes) { chunks.append($0) }
  return chunks
}

/// Restores from chunks, as a receiver would.
func restore(_ machine: KVStateMachine, appliedIndex: UInt64, from chunks: [[UInt8]]) throws {
  var iterator = chunks.makeIterator()
  try machine.restore(appliedIndex: appliedIndex) { iterator.next() }
}

/// Everything except the applied index, which changes even for a command that changes nothing.
func stateIgnoringIndex(_ machine: KVStateMachine) -> KVCanonicalState {
  var state = machine.canonicalState()
  state.appliedIndex = 0
  return state
}

extension SplitMix64 {
  mutating func bytes(count: Int) -> [UInt8] {
    (0..<count).map { _ in UInt8.random(in: 0...255, using: &self) }
  }
}
