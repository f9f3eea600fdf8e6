import EtcdAPI
import Foundation
import GRPCCore
import Testing

/// The generated code speaks etcd's wire format: field numbers and gRPC method names as etcd 3.4's
/// protos give them, so that etcd's own clients can later talk to raftdb.
@Suite struct EtcdAPITests {
  /// A PutRequest encodes to the bytes etcd's Go code writes for it (key is field 1, value 2,
  /// lease 3, prev_kv 4, each as proto3 encodes it) and decodes back to the same message.
  @Test func putRequestRoundTripsThroughEtcdsEncoding() throws {
    var put = Etcdserverpb_PutRequest()
    put.key = Data("foo".utf8)
    put.value = Data("bar".utf8)
    put.lease = 0x1234
    put.prevKv = true
    let bytes: [UInt8] = try put.serializedBytes()
    #expect(bytes == [0x0a, 3, 0x66, 0x6f, 0x6f, 0x12, 3, 0x62, 0x61, 0x72, 0x18, 0xb4, 0x24, 0x20, 1])
    let decoded = try Etcdserverpb_PutRequest(serializedBytes: bytes)
    #expect(decoded == put)
    #expect(String(decoding: decoded.key, as: UTF8.self) == "foo")
    #expect(decoded.lease == 0x1234)
  }

  /// A RangeResponse nests the header and mvccpb's KeyValue from the other protos.
  @Test func rangeResponseCarriesKeyValuesFromMvccpb() throws {
    var kv = Mvccpb_KeyValue()
    kv.key = Data("k".utf8)
    kv.modRevision = 7
    var response = Etcdserverpb_RangeResponse()
    response.header.revision = 7
    response.kvs = [kv]
    response.count = 1
    let decoded = try Etcdserverpb_RangeResponse(serializedBytes: try response.serializedBytes() as [UInt8])
    #expect(decoded.header.revision == 7)
    #expect(decoded.kvs.map(\.modRevision) == [7])
  }

  /// The method paths a client sends are etcd's ("/etcdserverpb.KV/Put"), with their streaming types.
  @Test func methodNamesAreEtcds() {
    #expect(Etcdserverpb_KV.Method.Put.descriptor.fullyQualifiedMethod == "etcdserverpb.KV/Put")
    #expect(Etcdserverpb_Watch.Method.Watch.descriptor.type == .bidirectionalStreaming)
    #expect(
      Etcdserverpb_Lease.Method.LeaseKeepAlive.descriptor.fullyQualifiedMethod
        == "etcdserverpb.Lease/LeaseKeepAlive")
    #expect(V3lockpb_Lock.Method.Lock.descriptor.fullyQualifiedMethod == "v3lockpb.Lock/Lock")
    #expect(V3electionpb_Election.Method.Observe.descriptor.type == .serverStreaming)
  }
}
