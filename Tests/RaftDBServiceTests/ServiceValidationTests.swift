import KVStore
import KVWatch
import NIOCore
import NIOPosix
import Raft
import RaftDBAPI
import RaftDBService
import Synchronization
import Testing

/// The service refuses, before proposing, exactly what a replica would reject when it applies the
/// entry (plus one documented extra: an expected value no stored value could match). A backend that
/// applies each request to a real `KVStateMachine` — without validating anything itself — shows
/// both verdicts side by side on seeded random requests, and that nothing refused reaches it.
@Suite struct ServiceValidationTests {
  static var limits: KVLimits {
    var limits = KVLimits()
    limits.maxKeyBytes = 8
    limits.maxValueBytes = 16
    limits.maxPairsPerPut = 4
    limits.maxIdempotencyKeyBytes = 6
    return limits
  }

  @Test func theServiceRefusesWhatAReplicaWouldReject() async throws {
    let loops = MultiThreadedEventLoopGroup.singleton
    let backend = MachineBackend(limits: Self.limits, loop: loops.next())
    let service = KVService(backend: backend, limits: Self.limits)
    var random = SplitMix64(seed: 20_261_201)
    var refused = 0
    var accepted = 0
    for round in 0..<3_000 {
      let (command, idempotencyKey) = Self.randomRequest(&random, round: round)
      // What a replica says about the same request, on a state machine of its own.
      let verdict = Self.replicaVerdict(command, idempotencyKey: idempotencyKey)
      let proposedBefore = backend.proposals
      let answer: ServiceError?
      do {
        switch command {
        case .put(let pairs):
          _ = try await service.put(pairs, idempotencyKey: idempotencyKey, on: loops.next()).get()
        case .delete(let key):
          _ = try await service.delete(key, idempotencyKey: idempotencyKey, on: loops.next()).get()
        case .compareAndSet(let key, let expected, let value):
          _ = try await service.compareAndSet(
            key, expected: expected, value: value, idempotencyKey: idempotencyKey, on: loops.next()
          ).get()
        case .compareAndDelete(let key, let expected):
          _ = try await service.compareAndDelete(
            key, expected: expected, idempotencyKey: idempotencyKey, on: loops.next()
          ).get()
        case .setClusterVersion, .txn, .compact, .grantLease, .revokeLease, .checkpointLeases:
          preconditionFailure("not generated here")
        }
        answer = nil
      } catch let error as ServiceError {
        answer = error
      }
      if let answer {
        refused += 1
        #expect(backend.proposals == proposedBefore, "round \(round): \(answer) was refused after proposing")
        switch answer {
        case .invalidArgument, .tooLarge: break
        default:
          Issue.record("round \(round): refused with \(answer), not as an invalid or too large request")
          continue
        }
      } else {
        accepted += 1
      }
      let serviceAccepts = answer == nil
      if Self.isUnmatchableComparison(command) {
        #expect(!serviceAccepts, "round \(round): an unmatchable expected value was proposed")
      } else {
        #expect(
          serviceAccepts == (verdict == nil),
          "round \(round): the service \(serviceAccepts ? "accepted" : "refused (\(answer!))") \(command) with key \(idempotencyKey ?? "none"), a replica \(verdict.map { "rejects it: \($0)" } ?? "accepts it")"
        )
      }
    }
    // The generator must exercise both sides, or the agreement above proves nothing.
    #expect(refused > 400 && accepted > 400, "refused \(refused), accepted \(accepted)")
  }

  /// A put of more pairs than a replica allows is refused before it is proposed (before, it was
  /// replicated and then rejected by every replica).
  @Test func aPutOfTooManyPairsIsRefusedBeforeProposing() async throws {
    let loops = MultiThreadedEventLoopGroup.singleton
    let backend = MachineBackend(limits: Self.limits, loop: loops.next())
    let service = KVService(backend: backend, limits: Self.limits)
    let pairs = (0..<5).map { KeyValue(key: "k\($0)", value: "v") }
    await #expect(throws: ServiceError.invalidArgument("a put of 5 keys exceeds the limit of 4 keys per put"))
    {
      try await service.put(pairs, idempotencyKey: nil, on: loops.next()).get()
    }
    #expect(backend.proposals == 0)
  }

  static func replicaVerdict(_ command: KVCommand, idempotencyKey: String?) -> String? {
    // A cluster whose log agreed version 2, as the backend's (compare-and-delete is allowed).
    let machine = KVStateMachine(limits: limits)
    _ = machine.apply(
      index: 1, data: KVRequest(command: .setClusterVersion(2), proposedAtMillis: 1).encoded())
    let request = KVRequest(command: command, idempotencyKey: idempotencyKey, proposedAtMillis: 1)
    if case .rejected(let reason) = machine.apply(index: 2, data: request.encoded()).result { return reason }
    return nil
  }

  static func isUnmatchableComparison(_ command: KVCommand) -> Bool {
    switch command {
    case .compareAndSet(_, let expected?, _), .compareAndDelete(_, let expected):
      expected.utf8.count > limits.maxValueBytes
    default: false
    }
  }

  /// Keys, values and idempotency keys around each limit (empty, at it, one over, multi-byte
  /// UTF-8, non-ASCII), and puts of 0 to 6 pairs with occasional repeated keys.
  static func randomRequest(_ random: inout SplitMix64, round: Int) -> (KVCommand, String?) {
    func pick(_ n: Int) -> Int { Int(random.next() % UInt64(n)) }
    func text(around limit: Int) -> String {
      let length = [0, 1, limit - 1, limit, limit, limit + 1, pick(limit), pick(limit), pick(limit + 3)][
        pick(9)]
      let unit = ["a", "\u{E9}", "z"][pick(3)]
      var result = ""
      while result.utf8.count + unit.utf8.count <= max(0, length) { result += unit }
      if result.utf8.count < length { result += "b" }
      return result
    }
    let idempotencyKey: String? =
      switch pick(10) {
      case 0: ""
      case 1: "key\u{7}"
      case 2: "k\u{E9}y"
      case 3: String(repeating: "k", count: 7)
      case 4, 5, 6: "r\(round)"  // Unique: a replay would answer with another request's result.
      default: nil
      }
    let command: KVCommand
    switch pick(4) {
    case 3:
      command = .compareAndDelete(key: text(around: limits.maxKeyBytes), expected: text(around: 16))
    case 0:
      var pairs = (0..<pick(7)).map { _ in
        KeyValue(key: text(around: limits.maxKeyBytes), value: text(around: 16))
      }
      if pairs.count > 1 && pick(4) == 0 { pairs[1].key = pairs[0].key }
      command = .put(pairs)
    case 1:
      command = .delete(key: text(around: limits.maxKeyBytes))
    default:
      command = .compareAndSet(
        key: text(around: limits.maxKeyBytes), expected: pick(3) == 0 ? nil : text(around: 16),
        value: text(around: 16))
    }
    return (command, idempotencyKey)
  }
}

/// Applies every request it is given to a real state machine, validating nothing itself: whatever
/// the service lets through reaches the replica's rules.
final class MachineBackend: ServiceBackend {
  private let state: Mutex<(machine: KVStateMachine, index: UInt64, proposals: Int)>
  private let loop: any EventLoop
  let watches: WatchDispatcher

  /// Starts at `clusterVersion` (by applying a `setClusterVersion`, as a leader would propose it).
  init(limits: KVLimits, loop: any EventLoop, clusterVersion: UInt32 = ClusterVersion.latest) {
    state = Mutex((KVStateMachine(limits: limits), 0, 0))
    self.loop = loop
    watches = WatchDispatcher(
      store: MVCCStore(), limits: WatchLimits(), loop: loop, progressInterval: .hours(1))
    if clusterVersion > ClusterVersion.initial { apply(.setClusterVersion(clusterVersion)) }
  }

  /// Applies a command as the leader's own proposal (not counted as a client's).
  func apply(_ command: KVCommand) {
    state.withLock { state in
      state.index += 1
      _ = state.machine.apply(
        index: state.index, data: KVRequest(command: command, proposedAtMillis: 1).encoded())
    }
  }

  func memberHeader() -> MemberHeader { MemberHeader(clusterID: 1, memberID: 1, raftTerm: 1) }

  func versions() -> VersionInfo {
    VersionInfo(server: ClusterVersion.latest, cluster: state.withLock { $0.machine.clusterVersion })
  }

  var proposals: Int { state.withLock { $0.proposals } }

  func submitWrite(_ request: KVRequest) -> EventLoopFuture<WriteOutcome> {
    let outcome = state.withLock { state in
      state.index += 1
      state.proposals += 1
      return state.machine.apply(index: state.index, data: request.encoded())
    }
    return loop.makeSucceededFuture(WriteOutcome(result: outcome.result, replayed: outcome.isDuplicate))
  }

  func staleRead(_ key: String) -> KVRecord? { state.withLock { $0.machine.get(key) } }

  func submitRead(_ key: String, level: ReadLevel) -> EventLoopFuture<KVRecord?> {
    loop.makeSucceededFuture(staleRead(key))
  }

  func submitStatus() -> EventLoopFuture<MemberStatus> {
    loop.makeFailedFuture(ServiceError.unavailable("not modelled"))
  }

  func staleStore() -> MVCCStore { state.withLock { $0.machine.store } }

  func submitStoreRead<T: Sendable>(
    level: ReadLevel, _ body: @escaping @Sendable (MVCCStore) throws(ServiceError) -> T
  ) -> EventLoopFuture<T> {
    let store = staleStore()
    return loop.makeCompletedFuture { () throws(ServiceError) in try body(store) }
  }

  func leaseKeepAlive(_ id: Int64) -> EventLoopFuture<Int64> {
    loop.makeFailedFuture(ServiceError.unavailable("not modelled"))
  }

  func leaseTimeToLive(_ id: Int64) -> EventLoopFuture<LeaseStatus> {
    loop.makeFailedFuture(ServiceError.unavailable("not modelled"))
  }

  var minimumLeaseTTL: Int64 { 2 }

  func addMember(_ info: MemberInfo, memberID: NodeID?, asVoter: Bool) async throws(ServiceError) -> String {
    throw .unavailable("not modelled")
  }

  func removeMember(named name: String) async throws(ServiceError) { throw .unavailable("not modelled") }

  func transferLeadership(to name: String?) async throws(ServiceError) -> MemberInfo {
    throw .unavailable("not modelled")
  }
}
