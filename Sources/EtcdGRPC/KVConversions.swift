import EtcdAPI
import Foundation
import GRPCCore
import KVStore
import RaftDBService

// etcd's v3 messages to and from the multi-version store's requests and results, which have their
// meaning field for field (docs/STATE_MACHINE.md). An enum value a client sends that etcd 3.4 does
// not define is refused as an invalid argument rather than guessed at.

extension KeyRange {
  init(key: Data, rangeEnd: Data) {
    self.init(key: [UInt8](key), rangeEnd: [UInt8](rangeEnd))
  }
}

extension RangeRequest {
  init(_ message: Etcdserverpb_RangeRequest) throws(RPCError) {
    self.init(range: KeyRange(key: message.key, rangeEnd: message.rangeEnd))
    limit = message.limit
    revision = message.revision
    switch message.sortOrder {
    case .none: sortOrder = .none
    case .ascend: sortOrder = .ascend
    case .descend: sortOrder = .descend
    case .UNRECOGNIZED(let value): throw invalidEnum("sort_order", value)
    }
    switch message.sortTarget {
    case .key: sortTarget = .key
    case .version: sortTarget = .version
    case .create: sortTarget = .create
    case .mod: sortTarget = .mod
    case .value: sortTarget = .value
    case .UNRECOGNIZED(let value): throw invalidEnum("sort_target", value)
    }
    keysOnly = message.keysOnly
    countOnly = message.countOnly
    minModRevision = message.minModRevision
    maxModRevision = message.maxModRevision
    minCreateRevision = message.minCreateRevision
    maxCreateRevision = message.maxCreateRevision
  }
}

extension PutRequest {
  init(_ message: Etcdserverpb_PutRequest) {
    self.init(key: [UInt8](message.key), value: [UInt8](message.value), lease: message.lease)
    prevKV = message.prevKv
    ignoreValue = message.ignoreValue
    ignoreLease = message.ignoreLease
  }
}

extension DeleteRangeRequest {
  init(_ message: Etcdserverpb_DeleteRangeRequest) {
    self.init(range: KeyRange(key: message.key, rangeEnd: message.rangeEnd), prevKV: message.prevKv)
  }
}

extension Compare {
  init(_ message: Etcdserverpb_Compare) throws(RPCError) {
    let result: Compare.Result
    switch message.result {
    case .equal: result = .equal
    case .notEqual: result = .notEqual
    case .less: result = .less
    case .greater: result = .greater
    case .UNRECOGNIZED(let value): throw invalidEnum("compare result", value)
    }
    // etcd reads the union's field that `target` names (a missing one is its zero value).
    let target: Compare.Target
    switch message.target {
    case .version: target = .version(message.version)
    case .create: target = .create(message.createRevision)
    case .mod: target = .mod(message.modRevision)
    case .value: target = .value([UInt8](message.value))
    case .lease: target = .lease(message.lease)
    case .UNRECOGNIZED(let value): throw invalidEnum("compare target", value)
    }
    self.init(range: KeyRange(key: message.key, rangeEnd: message.rangeEnd), result, target)
  }
}

extension TxnRequest {
  init(_ message: Etcdserverpb_TxnRequest) throws(RPCError) {
    var compare: [Compare] = []
    for item in message.compare { compare.append(try Compare(item)) }
    self.init(
      compare: compare, success: try Self.operations(message.success),
      failure: try Self.operations(message.failure))
  }

  private static func operations(_ messages: [Etcdserverpb_RequestOp]) throws(RPCError) -> [RequestOp] {
    var operations: [RequestOp] = []
    for message in messages {
      switch message.request {
      case .requestRange(let range)?: operations.append(.range(try RangeRequest(range)))
      case .requestPut(let put)?: operations.append(.put(PutRequest(put)))
      case .requestDeleteRange(let delete)?: operations.append(.deleteRange(DeleteRangeRequest(delete)))
      case .requestTxn(let txn)?: operations.append(.txn(try TxnRequest(txn)))
      // etcd 3.4 applies an empty RequestOp as nothing; refusing it says more.
      case nil:
        throw RPCError(code: .invalidArgument, message: "etcdserver: a txn operation holds no request")
      }
    }
    return operations
  }
}

func invalidEnum(_ field: String, _ value: Int) -> RPCError {
  RPCError(code: .invalidArgument, message: "etcdserver: unknown \(field) \(value)")
}

extension Mvccpb_KeyValue {
  init(_ kv: MVCCKeyValue) {
    self.init()
    key = Data(kv.key)
    createRevision = kv.createRevision
    modRevision = kv.modRevision
    version = kv.version
    value = Data(kv.value)
    lease = kv.lease
  }
}

extension Etcdserverpb_RangeResponse {
  init(_ response: RangeResponse, header: Etcdserverpb_ResponseHeader) {
    self.init()
    self.header = header
    kvs = response.kvs.map(Mvccpb_KeyValue.init)
    more = response.more
    count = response.count
  }
}

extension Etcdserverpb_TxnResponse {
  init(_ response: TxnResponse, header: Etcdserverpb_ResponseHeader) {
    self.init()
    self.header = header
    succeeded = response.succeeded
    responses = response.responses.map { operation in
      var message = Etcdserverpb_ResponseOp()
      switch operation {
      case .range(let range):
        message.responseRange = Etcdserverpb_RangeResponse(range, header: header)
      case .put(let put):
        var answer = Etcdserverpb_PutResponse()
        answer.header = header
        if let previous = put.prevKV { answer.prevKv = Mvccpb_KeyValue(previous) }
        message.responsePut = answer
      case .deleteRange(let delete):
        var answer = Etcdserverpb_DeleteRangeResponse()
        answer.header = header
        answer.deleted = delete.deleted
        answer.prevKvs = delete.prevKVs.map(Mvccpb_KeyValue.init)
        message.responseDeleteRange = answer
      case .txn(let nested):
        message.responseTxn = Etcdserverpb_TxnResponse(nested, header: header)
      }
      return message
    }
  }
}

extension Etcdserverpb_ResponseHeader {
  init(_ member: MemberHeader, revision: Int64) {
    self.init()
    clusterID = member.clusterID
    memberID = member.memberID
    raftTerm = member.raftTerm
    self.revision = revision
  }
}

extension KVService {
  /// etcd's response header from this member: cluster and member ids, term, and the store revision
  /// the answer reflects (nil: the newest this member applied).
  func etcdHeader(revision: Int64? = nil) -> Etcdserverpb_ResponseHeader {
    Etcdserverpb_ResponseHeader(memberHeader(), revision: revision ?? currentRevision())
  }
}
