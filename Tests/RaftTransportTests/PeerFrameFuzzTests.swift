import Foundation
import NIOCore
import NIOEmbedded
import Raft
import RaftStorage
import Testing

@testable import RaftTransport

/// A seeded mutational fuzzer of the peer port: valid streams (a hello, then messages of every
/// kind) are mutated — bits flipped, bytes replaced, cut short, spliced, lengths rewritten — and
/// fed to the inbound pipeline the transport builds, whose decoded messages go into a real Raft
/// core through `step`. Nothing may trap; the buffer budget must return to zero when the connection
/// closes. A failure prints the seed and case that reproduce it.
///
/// `RAFTDB_PEER_FUZZ_ITERATIONS` (default 3,000) and `RAFTDB_PEER_FUZZ_SEED` set a longer run, e.g.
/// `RAFTDB_PEER_FUZZ_ITERATIONS=1000000 swift test -c release --filter PeerFrameFuzzTests`.
@Suite struct PeerFrameFuzzTests {
  static let iterations =
    ProcessInfo.processInfo.environment["RAFTDB_PEER_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 3000
  static let seed =
    ProcessInfo.processInfo.environment["RAFTDB_PEER_FUZZ_SEED"].flatMap(UInt64.init) ?? 20_261_201

  /// Steps what the transport delivers into a core that is a follower of node 1 in a 3-node cluster.
  final class CoreDelegate: TransportDelegate, @unchecked Sendable {
    // Unchecked: used from one embedded event loop only.
    let node: RaftNode
    var stepped = 0
    var refused = 0

    init() {
      var options = RaftOptions(id: NodeID(2), randomSeed: 1)
      options.maxMessageBytes = 1 << 20
      node = RaftNode(
        options: options, stored: RaftNode.bootstrap(Configuration(voters: [1, 2, 3].map(NodeID.init))))
    }

    func transportReceived(_ messages: [Message]) {
      for message in messages {
        stepped += 1
        if node.step(message) != nil { refused += 1 }
      }
      while node.hasReady {
        let ready = node.takeReady()
        if let last = ready.entries.last { node.persisted(through: last.position) }
      }
    }
    func transportPeerUnreachable(_ peer: NodeID) {}
    func transportSnapshotSent(to peer: NodeID, succeeded: Bool) {}
    func transportBeginReceivingSnapshot(from peer: NodeID, metadata: SnapshotMetadata) throws
      -> any SnapshotSink
    {
      BufferSink()
    }
    func transportReceivedSnapshot(_ snapshot: ReceivedSnapshot) {
      _ = node.step(snapshot.message)
      snapshot.sink.abort()
    }
    func transportHasSpace(forSnapshotBytes bytes: UInt64) -> Bool { bytes < 1 << 30 }
    func transportRefused(_ refusal: TransportRefusal) {}
  }

  static func validStream(_ rng: inout SplitMix64) -> [UInt8] {
    var buffer = ByteBufferAllocator().buffer(capacity: 4096)
    let kind: WireFormat.StreamKind = rng.next() % 5 == 0 ? .snapshot : .messages
    buffer.writeHello(
      WireFormat.Hello(
        version: WireFormat.protocolVersion, kind: kind, from: NodeID(1 + rng.next() % 4), to: NodeID(2),
        advertisedAddress: "127.0.0.1:9001"))
    let messages = sampleMessages(from: NodeID(1), to: NodeID(2), includeSnapshot: true)
    for _ in 0..<(1 + rng.next() % 6) {
      var message = messages[Int(rng.next() % UInt64(messages.count))]
      message.term = [0, 1, 2, 3, 1 << 47, .max][Int(rng.next() % 6)]
      buffer.writeMessageFrame(message)
    }
    if kind == .snapshot {
      let metadata = SnapshotMetadata(index: 50, term: 2, configuration: Configuration(voters: [NodeID(1)]))
      buffer.writeFrame(.snapshotBegin) { body in
        body.writeSnapshotMetadata(metadata)
        body.writeInteger(UInt64(rng.next() % 64))
      }
      buffer.writeFrame(.snapshotChunk) { $0.writeBytes([1, 2, 3]) }
      buffer.writeFrame(.snapshotEnd) { _ in }
    }
    return Array(buffer.readableBytesView)
  }

  static func mutate(_ bytes: inout [UInt8], _ rng: inout SplitMix64) {
    guard !bytes.isEmpty else { return }
    for _ in 0..<(1 + rng.next() % 2) {
      let at = Int(rng.next() % UInt64(bytes.count))
      switch rng.next() % 7 {
      case 0: bytes[at] ^= UInt8(1 << (rng.next() % 8))
      case 1: bytes[at] = UInt8(truncatingIfNeeded: rng.next())
      case 2: bytes.removeLast(Int(rng.next() % UInt64(bytes.count)))
      case 3: bytes.insert(contentsOf: bytes[at...].prefix(64), at: at)
      case 4:
        // A length field rewritten to something large or zero.
        let values: [UInt32] = [0, 1, 0xFFFF_FFFF, 64 << 20, UInt32(bytes.count)]
        let value = values[Int(rng.next() % UInt64(values.count))]
        for k in 0..<4 where at + k < bytes.count {
          bytes[at + k] = UInt8(truncatingIfNeeded: value >> (24 - 8 * k))
        }
      case 5: bytes.replaceSubrange(at..<min(bytes.count, at + 8), with: [UInt8](repeating: 0xFF, count: 8))
      default:
        bytes.append(contentsOf: (0..<(rng.next() % 32)).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
      }
      if bytes.isEmpty { return }
    }
  }

  @Test func mutatedPeerStreamsNeverTrapTheTransportOrTheCore() throws {
    var rng = SplitMix64(seed: Self.seed)
    let budget = PeerBufferBudget(limitBytes: 8 << 20)
    var stepped = 0
    var refused = 0
    var closed = 0
    for iteration in 0..<Self.iterations {
      var bytes = Self.validStream(&rng)
      if iteration % 8 != 0 { Self.mutate(&bytes, &rng) }
      let delegate = CoreDelegate()
      let channel = EmbeddedChannel()
      let progress = InboundConnectionProgress()
      var options = TransportOptions()
      options.maxFrameBytes = 1 << 20
      let sync = channel.pipeline.syncOperations
      try sync.addHandler(
        PeerConnectionGuard(progress: progress, options: options, budget: budget) { _, _ in })
      try sync.addHandler(
        ByteToMessageHandler(
          FrameDecoder(maxFrameBytes: options.maxFrameBytes, progress: progress, budget: budget)))
      var admission = PeerAdmission()
      admission.members = [NodeID(1), NodeID(2), NodeID(3)]
      admission.admitsStrangers = iteration % 2 == 0
      admission.term = 2
      admission.leader = NodeID(1)
      let admitted = admission
      try sync.addHandler(
        InboundConnectionHandler(
          localID: NodeID(2), delegate: delegate, logger: testLogger, options: options, progress: progress,
          admission: { admitted }))
      try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
      // Deliver in random pieces, as TCP may.
      var offset = 0
      while offset < bytes.count, channel.isActive {
        let piece = min(bytes.count - offset, 1 + Int(rng.next() % 200))
        _ = try? channel.writeInbound(ByteBuffer(bytes: bytes[offset..<(offset + piece)]))
        channel.pipeline.fireChannelReadComplete()
        offset += piece
      }
      if !channel.isActive { closed += 1 }
      _ = try? channel.finish()
      stepped += delegate.stepped
      refused += delegate.refused
      #expect(
        budget.usedBytes == 0, "seed \(Self.seed) case \(iteration): budget left at \(budget.usedBytes)")
      if budget.usedBytes != 0 { return }
    }
    print(
      "peer frame fuzzer: \(Self.iterations) streams (seed \(Self.seed)), \(closed) refused by the transport, "
        + "\(stepped) messages stepped into the core, \(refused) of them refused by it")
    #expect(stepped > Self.iterations / 4, "the fuzzer must reach the core, not only the decoder")
    #expect(refused > 0)
  }
}
