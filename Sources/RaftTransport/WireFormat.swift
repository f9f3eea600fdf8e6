import NIOCore
import Raft

/// The peer protocol, version 2. Every frame is `[u32 length][u8 type][payload]`, where `length` counts
/// the type byte and the payload. A connection starts with a `hello` frame that names the protocol
/// version, the stream kind, the cluster, the Raft group and both node ids; after that a message
/// stream carries `message` frames (each addressed to a group) and a snapshot stream carries
/// `snapshotBegin`, `snapshotChunk`s and `snapshotEnd`, answered by one `snapshotAck`. Anything else
/// closes the connection. Version 2 added the cluster and group ids (version 1 had neither).
///
/// The receiver answers a hello with a `helloAnswer` frame: on a message stream when it accepts it,
/// and on any stream when it refuses it for naming another cluster or a group it does not run
/// (then it closes). The sender does not wait for the answer before its first messages; it uses a
/// refusal to stop sending there until a later hello is accepted. Builds before the answer ignore
/// what arrives on a connection they opened, so the answer needs no new protocol version.
public enum WireFormat {
  public static let protocolVersion: UInt8 = 2
  /// The one Raft group a process runs today. Every message names its group, so that many groups
  /// can later share one connection per pair of nodes; a frame for any other group is refused.
  public static let singleGroupID: UInt32 = 1
  /// The largest hello a sender can produce (fixed fields plus the longest advertised address).
  /// Frames before a hello is accepted are held to this, so a stranger cannot make a node buffer
  /// more than this per connection.
  public static let maxHelloFrameBytes = 64 + maxAdvertisedAddressBytes
  /// "RFTD": lets a receiver tell a raftdb peer from a stray client before trusting any length.
  public static let magic: UInt32 = 0x5246_5444
  public static let frameHeaderBytes = 5

  public enum FrameType: UInt8, Sendable {
    case hello = 1
    case message = 2
    case snapshotBegin = 3
    case snapshotChunk = 4
    case snapshotEnd = 5
    case snapshotAck = 6
    case helloAnswer = 7
  }

  /// What a receiver says to a hello (the `helloAnswer` frame: this byte, then its cluster id).
  public enum HelloVerdict: UInt8, Sendable {
    case accepted = 0
    case wrongCluster = 1
    case wrongGroup = 2
  }

  public enum StreamKind: UInt8, Sendable {
    case messages = 1
    case snapshot = 2
  }

  public struct Hello: Sendable, Equatable {
    public var version: UInt8
    public var kind: StreamKind
    public var from: NodeID
    public var to: NodeID
    /// Where the sender listens for peers, so that a node not yet told of it by a configuration (one
    /// that is joining) can still answer.
    public var advertisedAddress: String = ""
    /// The sender's cluster; 0 while it does not know one yet (a node that is joining). A receiver
    /// that knows its cluster refuses a hello from another.
    public var clusterID: UInt64 = 0
    /// The Raft group this stream belongs to (a snapshot stream) or that its messages default to.
    public var groupID: UInt32 = singleGroupID
  }

  static let maxAdvertisedAddressBytes = 256

  /// What the start of a connection's bytes holds, for tools that sit between peers and read the
  /// hello without taking part (the verifier's fault proxy).
  public enum LeadingHello: Sendable {
    case incomplete
    case hello(Hello)
    case invalid(WireError)
  }

  /// Decodes the hello at the start of `bytes` (which it does not consume), as a receiver would.
  public static func leadingHello(_ bytes: ByteBuffer) -> LeadingHello {
    var decoder = FrameDecoder(maxFrameBytes: maxHelloFrameBytes)
    var copy = bytes
    do {
      switch try decoder.decodeFrame(from: &copy) {
      case nil: return .incomplete
      case .hello(let hello)?: return .hello(hello)
      case _?: return .invalid(.malformed("the first frame is not a hello"))
      }
    } catch {
      return .invalid(error)
    }
  }
}

/// A decoded frame.
public enum Frame: Sendable {
  case hello(WireFormat.Hello)
  case message(Message)
  case snapshotBegin(SnapshotMetadata, dataSize: UInt64)
  case snapshotChunk(ByteBuffer)
  case snapshotEnd
  case snapshotAck
  /// The receiver's verdict on the hello, and the receiver's cluster (0 if it knows none).
  case helloAnswer(WireFormat.HelloVerdict, clusterID: UInt64)
}

/// Why bytes from a peer were refused. The connection is closed; the node is unharmed.
public enum WireError: Error, Sendable, CustomStringConvertible, Equatable {
  case frameTooLarge(Int, limit: Int)
  case unknownFrameType(UInt8)
  case badMagic(UInt32)
  case unsupportedVersion(UInt8)
  case unknownGroup(UInt32)
  case bufferBudgetExhausted(limit: Int)
  case malformed(String)

  public var description: String {
    switch self {
    case .frameTooLarge(let size, let limit): "frame of \(size) bytes exceeds the \(limit)-byte limit"
    case .unknownFrameType(let type): "unknown frame type \(type)"
    case .badMagic(let magic): "not a raftdb peer (magic \(String(magic, radix: 16)))"
    case .unsupportedVersion(let version):
      "peer speaks protocol version \(version); this node speaks \(WireFormat.protocolVersion)"
    case .unknownGroup(let group): "frame for Raft group \(group), which this node does not run"
    case .bufferBudgetExhausted(let limit):
      "peer connections together buffer more than the \(limit)-byte budget for partial frames"
    case .malformed(let what): "malformed frame: \(what)"
    }
  }
}

// MARK: - Encoding

extension ByteBuffer {
  /// Writes a complete frame whose payload `body` writes; the length is patched in afterwards, so the
  /// payload is encoded exactly once, straight into the buffer.
  @inlinable
  mutating func writeFrame(_ type: WireFormat.FrameType, _ body: (inout ByteBuffer) -> Void) {
    let lengthIndex = writerIndex
    writeInteger(UInt32(0))
    writeInteger(type.rawValue)
    body(&self)
    let length = writerIndex - lengthIndex - 4
    setInteger(UInt32(length), at: lengthIndex)
  }

  mutating func writeHello(_ hello: WireFormat.Hello) {
    writeFrame(.hello) { buffer in
      buffer.writeInteger(WireFormat.magic)
      buffer.writeInteger(hello.version)
      buffer.writeInteger(hello.kind.rawValue)
      buffer.writeInteger(hello.clusterID)
      buffer.writeInteger(hello.groupID)
      buffer.writeInteger(hello.from.rawValue)
      buffer.writeInteger(hello.to.rawValue)
      let address = Array(hello.advertisedAddress.utf8.prefix(WireFormat.maxAdvertisedAddressBytes))
      buffer.writeInteger(UInt16(address.count))
      buffer.writeBytes(address)
    }
  }

  mutating func writeHelloAnswer(_ verdict: WireFormat.HelloVerdict, clusterID: UInt64) {
    writeFrame(.helloAnswer) { buffer in
      buffer.writeInteger(verdict.rawValue)
      buffer.writeInteger(clusterID)
    }
  }

  mutating func writeMessageFrame(_ message: Message, group: UInt32 = WireFormat.singleGroupID) {
    writeFrame(.message) { buffer in
      buffer.writeInteger(group)
      buffer.writeRaftMessage(message)
    }
  }

  mutating func writeRaftMessage(_ message: Message) {
    writeInteger(message.body.wireTag)
    writeInteger(message.from.rawValue)
    writeInteger(message.to.rawValue)
    writeInteger(message.term)
    switch message.body {
    case .voteRequest(let request):
      writeInteger(UInt8((request.isPreVote ? 1 : 0) | (request.isLeadershipTransfer ? 2 : 0)))
      writeInteger(request.lastLogIndex)
      writeInteger(request.lastLogTerm)
    case .voteResponse(let response):
      writeInteger(UInt8((response.isPreVote ? 1 : 0) | (response.granted ? 2 : 0)))
    case .appendEntries(let append):
      writeInteger(append.prevLogIndex)
      writeInteger(append.prevLogTerm)
      writeInteger(append.leaderCommit)
      writeInteger(UInt32(append.entries.count))
      for entry in append.entries {
        // Indexes are implied: entries are contiguous from prevLogIndex + 1.
        writeInteger(entry.term)
        writeInteger(entry.kind.rawValue)
        writeInteger(UInt32(entry.data.count))
        writeBytes(entry.data)
      }
    case .appendEntriesResponse(.accepted(let matchIndex)):
      writeInteger(UInt8(0))
      writeInteger(matchIndex)
    case .appendEntriesResponse(.rejected(let rejectedIndex, let hintIndex, let hintTerm)):
      writeInteger(UInt8(1))
      writeInteger(rejectedIndex)
      writeInteger(hintIndex)
      writeInteger(hintTerm)
    case .heartbeat(let heartbeat):
      writeInteger(heartbeat.commit)
      writeInteger(heartbeat.readRound)
    case .heartbeatResponse(let response):
      writeInteger(response.readRound)
    case .installSnapshot(let metadata):
      writeSnapshotMetadata(metadata)
    case .timeoutNow:
      break
    case .readIndexRequest(let request):
      writeInteger(request.requestID)
      writeInteger(request.mode.rawValue)
    case .transferCheck(let check):
      writeInteger(check.nonce)
      writeInteger(check.candidate.rawValue)
      writeInteger(check.campaignTerm)
    case .transferConfirm(let nonce):
      writeInteger(nonce)
    case .leaderHint(let leader):
      writeInteger(leader.rawValue)
    case .leaderQuery:
      break
    case .memberQuery(let candidate):
      writeInteger(candidate.rawValue)
    case .readIndexResponse(let response):
      writeInteger(response.requestID)
      switch response.result {
      case .ready(let index):
        writeInteger(UInt8(0))
        writeInteger(index)
      case .failed(let failure):
        writeInteger(UInt8(1))
        writeInteger(failure.rawValue)
      }
    }
  }

  mutating func writeSnapshotMetadata(_ metadata: SnapshotMetadata) {
    writeInteger(metadata.index)
    writeInteger(metadata.term)
    let configuration = metadata.configuration.encoded()
    writeInteger(UInt32(configuration.count))
    writeBytes(configuration)
  }
}

extension Message.Body {
  var wireTag: UInt8 {
    switch self {
    case .voteRequest: 1
    case .voteResponse: 2
    case .appendEntries: 3
    case .appendEntriesResponse: 4
    case .heartbeat: 5
    case .heartbeatResponse: 6
    case .installSnapshot: 7
    case .timeoutNow: 8
    case .readIndexRequest: 9
    case .readIndexResponse: 10
    case .transferCheck: 11
    case .transferConfirm: 12
    case .leaderHint: 13
    case .leaderQuery: 14
    case .memberQuery: 15
    }
  }
}

// MARK: - Decoding

extension ByteBuffer {
  mutating func readChecked<T: FixedWidthInteger>(_: T.Type = T.self, _ what: StaticString) throws(WireError)
    -> T
  {
    guard let value = readInteger(as: T.self) else { throw .malformed("truncated \(what)") }
    return value
  }

  mutating func readNodeID(_ what: StaticString) throws(WireError) -> NodeID {
    let raw: UInt64 = try readChecked(UInt64.self, what)
    guard raw != 0 else { throw .malformed("\(what) is node 0") }
    return NodeID(raw)
  }

  mutating func readHello() throws(WireError) -> WireFormat.Hello {
    let magic: UInt32 = try readChecked(UInt32.self, "magic")
    guard magic == WireFormat.magic else { throw .badMagic(magic) }
    let version: UInt8 = try readChecked(UInt8.self, "version")
    guard version == WireFormat.protocolVersion else { throw .unsupportedVersion(version) }
    let kindByte: UInt8 = try readChecked(UInt8.self, "stream kind")
    guard let kind = WireFormat.StreamKind(rawValue: kindByte) else {
      throw .malformed("stream kind \(kindByte)")
    }
    let clusterID: UInt64 = try readChecked(UInt64.self, "cluster id")
    let groupID: UInt32 = try readChecked(UInt32.self, "group id")
    guard groupID == WireFormat.singleGroupID else { throw .unknownGroup(groupID) }
    let from = try readNodeID("hello sender")
    let to = try readNodeID("hello receiver")
    let length = Int(try readChecked(UInt16.self, "address length"))
    guard length <= WireFormat.maxAdvertisedAddressBytes, let address = readBytes(length: length),
      let text = String(validating: address, as: UTF8.self)
    else { throw .malformed("bad advertised address") }
    return WireFormat.Hello(
      version: version, kind: kind, from: from, to: to, advertisedAddress: text, clusterID: clusterID,
      groupID: groupID)
  }

  /// Decodes one Raft message, refusing (never trapping on) anything malformed or oversized.
  mutating func readRaftMessage(maxEntries: Int) throws(WireError) -> Message {
    let tag: UInt8 = try readChecked(UInt8.self, "message tag")
    let from = try readNodeID("message sender")
    let to = try readNodeID("message receiver")
    let term: UInt64 = try readChecked(UInt64.self, "term")
    let body: Message.Body
    switch tag {
    case 1:
      let flags: UInt8 = try readChecked(UInt8.self, "vote flags")
      body = .voteRequest(
        VoteRequest(
          isPreVote: flags & 1 != 0, lastLogIndex: try readChecked(UInt64.self, "last log index"),
          lastLogTerm: try readChecked(UInt64.self, "last log term"), isLeadershipTransfer: flags & 2 != 0))
    case 2:
      let flags: UInt8 = try readChecked(UInt8.self, "vote response flags")
      body = .voteResponse(VoteResponse(isPreVote: flags & 1 != 0, granted: flags & 2 != 0))
    case 3:
      let prevLogIndex: UInt64 = try readChecked(UInt64.self, "prev log index")
      let prevLogTerm: UInt64 = try readChecked(UInt64.self, "prev log term")
      let leaderCommit: UInt64 = try readChecked(UInt64.self, "leader commit")
      let count = Int(try readChecked(UInt32.self, "entry count"))
      guard count <= maxEntries, count <= readableBytes / 13 else {
        throw .malformed("\(count) entries in \(readableBytes) bytes")
      }
      guard prevLogIndex <= UInt64.max - UInt64(count) else { throw .malformed("entry index overflow") }
      var entries: [LogEntry] = []
      entries.reserveCapacity(count)
      for k in 0..<count {
        let entryTerm: UInt64 = try readChecked(UInt64.self, "entry term")
        let kindByte: UInt8 = try readChecked(UInt8.self, "entry kind")
        guard let kind = LogEntry.Kind(rawValue: kindByte) else { throw .malformed("entry kind \(kindByte)") }
        let size = Int(try readChecked(UInt32.self, "entry size"))
        guard let data = readBytes(length: size) else { throw .malformed("entry data truncated") }
        entries.append(LogEntry(index: prevLogIndex + 1 + UInt64(k), term: entryTerm, kind: kind, data: data))
      }
      body = .appendEntries(
        AppendEntries(
          prevLogIndex: prevLogIndex, prevLogTerm: prevLogTerm, entries: entries, leaderCommit: leaderCommit))
    case 4:
      let kind: UInt8 = try readChecked(UInt8.self, "append response kind")
      switch kind {
      case 0:
        body = .appendEntriesResponse(.accepted(matchIndex: try readChecked(UInt64.self, "match index")))
      case 1:
        body = .appendEntriesResponse(
          .rejected(
            rejectedIndex: try readChecked(UInt64.self, "rejected index"),
            hintIndex: try readChecked(UInt64.self, "hint index"),
            hintTerm: try readChecked(UInt64.self, "hint term")))
      default:
        throw .malformed("append response kind \(kind)")
      }
    case 5:
      body = .heartbeat(
        Heartbeat(
          commit: try readChecked(UInt64.self, "commit"),
          readRound: try readChecked(UInt64.self, "read round")))
    case 6:
      body = .heartbeatResponse(HeartbeatResponse(readRound: try readChecked(UInt64.self, "read round")))
    case 7:
      body = .installSnapshot(try readSnapshotMetadata())
    case 8:
      body = .timeoutNow
    case 9:
      let requestID: UInt64 = try readChecked(UInt64.self, "read request id")
      let modeByte: UInt8 = try readChecked(UInt8.self, "read mode")
      guard let mode = ReadMode(rawValue: modeByte) else { throw .malformed("read mode \(modeByte)") }
      body = .readIndexRequest(ReadIndexRequest(requestID: requestID, mode: mode))
    case 10:
      let requestID: UInt64 = try readChecked(UInt64.self, "read request id")
      let kind: UInt8 = try readChecked(UInt8.self, "read result kind")
      let result: ReadResult
      switch kind {
      case 0:
        result = .ready(index: try readChecked(UInt64.self, "read index"))
      case 1:
        let code: UInt8 = try readChecked(UInt8.self, "read failure")
        guard let failure = ReadFailure(rawValue: code) else { throw .malformed("read failure \(code)") }
        result = .failed(failure)
      default:
        throw .malformed("read result kind \(kind)")
      }
      body = .readIndexResponse(ReadIndexResponse(requestID: requestID, result: result))
    case 11:
      body = .transferCheck(
        TransferCheck(
          nonce: try readChecked(UInt64.self, "nonce"), candidate: try readNodeID("transfer candidate"),
          campaignTerm: try readChecked(UInt64.self, "campaign term")))
    case 12:
      body = .transferConfirm(nonce: try readChecked(UInt64.self, "nonce"))
    case 13:
      body = .leaderHint(leader: try readNodeID("hinted leader"))
    case 14:
      body = .leaderQuery
    case 15:
      body = .memberQuery(candidate: try readNodeID("queried candidate"))
    default:
      throw .malformed("message tag \(tag)")
    }
    guard readableBytes == 0 else { throw .malformed("\(readableBytes) trailing bytes after message") }
    return Message(from: from, to: to, term: term, body: body)
  }

  mutating func readSnapshotMetadata() throws(WireError) -> SnapshotMetadata {
    let index: UInt64 = try readChecked(UInt64.self, "snapshot index")
    let term: UInt64 = try readChecked(UInt64.self, "snapshot term")
    let size = Int(try readChecked(UInt32.self, "configuration size"))
    guard size <= readableBytes, let bytes = readBytes(length: size) else {
      throw .malformed("configuration truncated")
    }
    do {
      return SnapshotMetadata(index: index, term: term, configuration: try Configuration(decoding: bytes))
    } catch {
      throw .malformed("configuration: \(error)")
    }
  }
}
