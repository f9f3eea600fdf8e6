import Raft

/// A 3-node cluster in one process: messages handed over directly, persistence acknowledged at once.
/// Also compiled into the microbenchmarks (Benchmarks/, through a symlink).
final class CoreCluster {
  var nodes: [NodeID: RaftNode] = [:]
  var inbox: [Message] = []
  var committedOnLeader = 0
  private(set) var leader: RaftNode

  init() {
    let ids = [NodeID(1), NodeID(2), NodeID(3)]
    let bootstrap = RaftNode.bootstrap(Configuration(voters: ids))
    for id in ids {
      var options = RaftOptions(id: id, randomSeed: id.rawValue)
      options.maxMessageBytes = 4 << 20
      options.maxInflightBytes = 64 << 20
      options.maxUncommittedBytes = 256 << 20
      nodes[id] = RaftNode(options: options, stored: bootstrap)
    }
    // Nodes refuse votes for their first election timeout (they may have granted a lease before a
    // restart), so time must pass on all of them before anyone can win.
    leader = nodes[ids[0]]!
    while !nodes.values.contains(where: \.isLeader) {
      for id in ids {
        nodes[id]!.tick()
        drain(nodes[id]!)
      }
      deliverAll()
    }
    leader = nodes.values.first(where: \.isLeader)!
    deliverAll()
  }

  /// Runs one node's Ready the way a server would, with instant persistence.
  func drain(_ node: RaftNode) {
    while node.hasReady {
      let ready = node.takeReady()
      inbox.append(contentsOf: ready.messages)
      inbox.append(contentsOf: ready.messagesAfterPersist)
      if let position = ready.persistedThrough { node.persisted(through: position) }
      if node === leader {
        for entry in ready.committedEntries where entry.kind == .command { committedOnLeader += 1 }
      }
    }
  }

  func deliverAll() {
    while !inbox.isEmpty {
      let batch = inbox
      inbox.removeAll(keepingCapacity: true)
      for message in batch {
        let target = nodes[message.to]!
        target.step(message)
        drain(target)
      }
    }
  }
}
