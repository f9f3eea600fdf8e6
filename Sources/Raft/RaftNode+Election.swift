// Leader election (lesson 07, Raft §5.2 and §5.4.1, pre-vote from thesis §9.6).
extension RaftNode {
  func requestVotes(isPreVote: Bool) {
    let request = VoteRequest(
      isPreVote: isPreVote, lastLogIndex: log.lastIndex, lastLogTerm: log.lastTerm,
      isLeadershipTransfer: campaignIsTransfer)
    for voter in log.configurations.latest.voters where voter != id {
      if isPreVote {
        // Nobody's state changes in a pre-vote, so there is nothing to persist first.
        pendingMessages.append(Message(from: id, to: voter, term: term + 1, body: .voteRequest(request)))
      } else {
        // The new term and our vote for ourselves must be durable before anyone counts on them.
        sendAfterPersist(to: voter, .voteRequest(request))
      }
    }
  }

  func handleVoteRequest(from candidate: NodeID, term requestTerm: UInt64, _ request: VoteRequest) {
    let bugs = options.plantedBugs
    let alreadyVotedForCandidate = vote == candidate
    let votesAgain = bugs.contains(.grantTwoVotesPerTerm) && role == .follower
    let freeToVote = (vote == nil || votesAgain) && leader == nil
    let futureTermPreVote = request.isPreVote && requestTerm > term
    let canVote = alreadyVotedForCandidate || freeToVote || futureTermPreVote
    let candidateLog = LogPosition(index: request.lastLogIndex, term: request.lastLogTerm)
    let upToDate = log.isUpToDate(candidateLog) || bugs.contains(.skipUpToDateCheck)

    guard canVote && upToDate else {
      send(to: candidate, .voteResponse(VoteResponse(isPreVote: request.isPreVote, granted: false)))
      return
    }
    if request.isPreVote {
      // Answer in the term the candidate asked about, so it can tell this grant is for that round.
      pendingMessages.append(
        Message(
          from: id, to: candidate, term: requestTerm,
          body: .voteResponse(VoteResponse(isPreVote: true, granted: true))))
    } else {
      vote = candidate
      electionElapsed = 0
      // A vote is a promise: it is sent only once the vote is on disk.
      sendAfterPersist(to: candidate, .voteResponse(VoteResponse(isPreVote: false, granted: true)))
    }
  }

  func handleVoteResponse(from voter: NodeID, term responseTerm: UInt64, _ response: VoteResponse) {
    if response.isPreVote {
      guard role == .preCandidate, responseTerm == term + 1 || !response.granted else { return }
    } else {
      guard role == .candidate, responseTerm == term else { return }
    }
    guard log.configurations.latest.isVoter(voter), !votes.contains(where: { $0.voter == voter }) else {
      return
    }
    votes.append((voter, response.granted))
    _ = tallyVotes(isPreVote: response.isPreVote)
  }

  /// Acts on the votes so far: wins, loses, or keeps waiting. Returns whether the campaign ended.
  func tallyVotes(isPreVote: Bool) -> Bool {
    let configuration = log.configurations.latest
    let granted = votes.reduce(0) { $0 + ($1.granted ? 1 : 0) }
    let rejected = votes.count - granted
    if granted >= configuration.quorum {
      if isPreVote {
        becomeCandidate(isTransfer: false)
      } else {
        becomeLeader()
      }
      return true
    }
    if rejected > configuration.voterCount - configuration.quorum {
      becomeFollower(term: term, leader: nil)
      return true
    }
    return false
  }
}
