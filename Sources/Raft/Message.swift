/// A message between two Raft nodes. The core produces and consumes these as plain values; the
/// transport encodes them, and the simulator delivers them (or not) as its fault model decides.
public struct Message: Sendable, CustomStringConvertible {
  public var from: NodeID
  public var to: NodeID
  /// The sender's term (for a pre-vote request: the term the sender would campaign in).
  public var term: UInt64
  public var body: Body

  public init(from: NodeID, to: NodeID, term: UInt64, body: Body) {
    self.from = from
    self.to = to
    self.term = term
    self.body = body
  }

  public enum Body: Sendable {
    case voteRequest(VoteRequest)
    case voteResponse(VoteResponse)
    case appendEntries(AppendEntries)
    case appendEntriesResponse(AppendEntriesResponse)
    case heartbeat(Heartbeat)
    case heartbeatResponse(HeartbeatResponse)
    /// Tells a follower to install the snapshot described. The server layer streams the snapshot's
    /// bytes alongside and hands this message to the receiving core only once they are stored.
    case installSnapshot(SnapshotMetadata)
    /// Leadership transfer: the receiver should start an election at once (thesis §3.10).
    case timeoutNow
    /// A follower asks the leader for a read index on behalf of one of its clients.
    case readIndexRequest(ReadIndexRequest)
    case readIndexResponse(ReadIndexResponse)
    /// "Did you tell `candidate` to campaign?", asked of the leader before acting on a transfer: by
    /// the node told to campaign, and by a voter asked to ignore its lease for that campaign. The
    /// answer comes back only if the leader really sent the order; the nonce, sent to the leader's
    /// configured address, is what a peer forging the leader's identity cannot see.
    case transferCheck(TransferCheck)
    /// The leader's confirmation, echoing the check's nonce.
    case transferConfirm(nonce: UInt64)
    /// "The leader is this node": sent by a member in a leader's lease to a member that campaigns
    /// anyway. A node whose configuration lags (it missed the entry that added that leader) would
    /// otherwise refuse that leader's messages for as long as it leads. Also the answer to a
    /// `memberQuery`, naming a candidate of a newer configuration.
    case leaderHint(leader: NodeID)
    /// "Who leads?", asked of the members a node knows when a leader it does not know keeps
    /// contacting it (its configuration may lag); answered with a `leaderHint`.
    case leaderQuery
    /// "Is this candidate one of us?", asked of the members a node knows when a candidate it does
    /// not know asks for its vote (its configuration may lag, and without its vote that candidate
    /// may lack a quorum); a member whose newest configuration holds the candidate answers with a
    /// `leaderHint` naming it.
    case memberQuery(candidate: NodeID)
  }

  public var description: String { "\(from)->\(to) t\(term) \(body)" }
}

public struct VoteRequest: Sendable, Hashable {
  /// A pre-vote (thesis §9.6) asks "would you vote for me?" without anyone changing term.
  public var isPreVote: Bool
  public var lastLogIndex: UInt64
  public var lastLogTerm: UInt64
  /// Set when the campaign follows `timeoutNow`: voters then ignore their leader lease.
  public var isLeadershipTransfer: Bool

  public init(isPreVote: Bool, lastLogIndex: UInt64, lastLogTerm: UInt64, isLeadershipTransfer: Bool) {
    self.isPreVote = isPreVote
    self.lastLogIndex = lastLogIndex
    self.lastLogTerm = lastLogTerm
    self.isLeadershipTransfer = isLeadershipTransfer
  }
}

public struct VoteResponse: Sendable, Hashable {
  public var isPreVote: Bool
  public var granted: Bool

  public init(isPreVote: Bool, granted: Bool) {
    self.isPreVote = isPreVote
    self.granted = granted
  }
}

public struct AppendEntries: Sendable {
  public var prevLogIndex: UInt64
  public var prevLogTerm: UInt64
  public var entries: [LogEntry]
  public var leaderCommit: UInt64

  public init(prevLogIndex: UInt64, prevLogTerm: UInt64, entries: [LogEntry], leaderCommit: UInt64) {
    self.prevLogIndex = prevLogIndex
    self.prevLogTerm = prevLogTerm
    self.entries = entries
    self.leaderCommit = leaderCommit
  }
}

public enum AppendEntriesResponse: Sendable, Hashable {
  /// The follower's log matches the leader's through `matchIndex` (and that much is durable).
  case accepted(matchIndex: UInt64)
  /// The consistency check failed at `rejectedIndex` (the request's `prevLogIndex`). The hint is
  /// the follower's last entry at or below `rejectedIndex` whose term is at most the request's
  /// `prevLogTerm`, so the leader can skip a whole term of mismatches in one round trip.
  case rejected(rejectedIndex: UInt64, hintIndex: UInt64, hintTerm: UInt64)
}

public struct Heartbeat: Sendable, Hashable {
  /// The leader's commit index, capped at what this follower is known to have matched.
  public var commit: UInt64
  /// Read-confirmation round: a quorum acknowledging round `r` confirms leadership for every read
  /// that arrived before round `r` was sent.
  public var readRound: UInt64

  public init(commit: UInt64, readRound: UInt64) {
    self.commit = commit
    self.readRound = readRound
  }
}

public struct HeartbeatResponse: Sendable, Hashable {
  public var readRound: UInt64
  public init(readRound: UInt64) { self.readRound = readRound }
}

public struct TransferCheck: Sendable, Hashable {
  public var nonce: UInt64
  /// The node that claims it was told to campaign.
  public var candidate: NodeID
  /// The term it campaigns in (one above the term the order was sent in).
  public var campaignTerm: UInt64

  public init(nonce: UInt64, candidate: NodeID, campaignTerm: UInt64) {
    self.nonce = nonce
    self.candidate = candidate
    self.campaignTerm = campaignTerm
  }
}

public struct ReadIndexRequest: Sendable, Hashable {
  public var requestID: UInt64
  public var mode: ReadMode

  public init(requestID: UInt64, mode: ReadMode) {
    self.requestID = requestID
    self.mode = mode
  }
}

public struct ReadIndexResponse: Sendable, Hashable {
  public var requestID: UInt64
  public var result: ReadResult

  public init(requestID: UInt64, result: ReadResult) {
    self.requestID = requestID
    self.result = result
  }
}

extension Message.Body: CustomStringConvertible {
  public var description: String {
    switch self {
    case .voteRequest(let r):
      "\(r.isPreVote ? "prevote" : "vote")(last=\(r.lastLogIndex)@\(r.lastLogTerm)\(r.isLeadershipTransfer ? " transfer" : ""))"
    case .voteResponse(let r): "\(r.isPreVote ? "prevote" : "vote")-\(r.granted ? "granted" : "rejected")"
    case .appendEntries(let a):
      "append(prev=\(a.prevLogIndex)@\(a.prevLogTerm) n=\(a.entries.count) commit=\(a.leaderCommit))"
    case .appendEntriesResponse(.accepted(let m)): "append-ok(match=\(m))"
    case .appendEntriesResponse(.rejected(let r, let hi, let ht)): "append-reject(at=\(r) hint=\(hi)@\(ht))"
    case .heartbeat(let h): "heartbeat(commit=\(h.commit) round=\(h.readRound))"
    case .heartbeatResponse(let h): "heartbeat-ok(round=\(h.readRound))"
    case .installSnapshot(let s): "install(\(s.index)@\(s.term))"
    case .timeoutNow: "timeout-now"
    case .readIndexRequest(let r): "read-index(\(r.requestID) \(r.mode))"
    case .readIndexResponse(let r): "read-index-resp(\(r.requestID) \(r.result))"
    case .transferCheck(let c): "transfer-check(\(c.candidate) t\(c.campaignTerm) #\(c.nonce))"
    case .transferConfirm(let nonce): "transfer-confirm(#\(nonce))"
    case .leaderHint(let leader): "leader-hint(\(leader))"
    case .leaderQuery: "leader-query"
    case .memberQuery(let candidate): "member-query(\(candidate))"
    }
  }
}
