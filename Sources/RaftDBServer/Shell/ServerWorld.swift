import Foundation
import KVStore
import Logging
import NIOCore
import Raft
import RaftGroup
import RaftStorage
import RaftTransport

// The real world a server's `RaftGroup` runs in: NIO's monotonic clock, the node's event loop, the
// storage writer thread, the peer transport and snapshot files. Each hops back to the node's loop
// before it calls the group.

/// NIO's monotonic clock.
final class MonotonicClock: GroupClock {
  var nowNanoseconds: UInt64 { NIODeadline.now().uptimeNanoseconds }
}

/// Runs the group's deferred work on the node's event loop.
final class LoopExecutor: GroupExecutor {
  let loop: any EventLoop
  init(loop: any EventLoop) { self.loop = loop }

  func execute(_ work: @escaping () -> Void) {
    // Created on the loop (the group only calls this from there) and run there: NIOLoopBound checks both.
    let bound = NIOLoopBound(work, eventLoop: loop)
    loop.execute { bound.value() }
  }

  func execute(afterNanoseconds nanoseconds: UInt64, _ work: @escaping () -> Void) {
    let bound = NIOLoopBound(work, eventLoop: loop)
    loop.scheduleTask(in: .nanoseconds(Int64(clamping: nanoseconds))) { bound.value() }
  }
}

/// The group's log and hard state, written by the storage writer thread.
final class WriterStorage: GroupStorage {
  let writer: StorageWriter
  let loop: any EventLoop
  init(writer: StorageWriter, loop: any EventLoop) {
    self.writer = writer
    self.loop = loop
  }

  func persist(_ write: GroupWrite, completion: @escaping (Result<Void, GroupStorageFailure>) -> Void) {
    let completion = NIOLoopBound(completion, eventLoop: loop)
    let loop = self.loop
    var sink: LockedSnapshotSink?
    if let staged = write.snapshot {
      // Only the transport stages snapshots, always as LockedSnapshotSink (transportReceivedSnapshot).
      sink = staged as? LockedSnapshotSink
      precondition(sink != nil, "a staged snapshot that is not a LockedSnapshotSink")
    }
    writer.submit(
      PersistJob(
        batch: PersistBatch(snapshot: sink?.metadata, entries: write.entries, hardState: write.hardState),
        mustSync: write.mustSync, snapshotToCommit: sink,
        completion: { result in
          loop.execute { completion.value(result.mapError { GroupStorageFailure("\($0)") }) }
        }))
  }
}

/// Sends the group's messages through the peer transport, and its snapshots from the snapshot files.
final class TransportSink: GroupMessageSink {
  unowned let node: RaftDBNode
  init(node: RaftDBNode) { self.node = node }

  func send(_ messages: [Message]) { node.transport.send(messages) }

  func sendSnapshot(_ message: Message, metadata: SnapshotMetadata) {
    node.sendSnapshot(message, metadata: metadata)
  }
}

/// Saves and loads the key-value state machine's snapshots as files, off the loop.
final class FileSnapshotter: GroupSnapshotStore {
  unowned let node: RaftDBNode
  init(node: RaftDBNode) { self.node = node }

  func save(
    _ machine: KVStateMachine, at metadata: SnapshotMetadata,
    completion: @escaping (Result<Void, GroupStorageFailure>) -> Void
  ) {
    node.saveSnapshot(
      machine.snapshot(), at: metadata, completion: NIOLoopBound(completion, eventLoop: node.loop))
  }

  func load(
    _ metadata: SnapshotMetadata, completion: @escaping (Result<KVStateMachine, GroupStorageFailure>) -> Void
  ) {
    node.loadSnapshot(metadata, completion: NIOLoopBound(completion, eventLoop: node.loop))
  }
}
