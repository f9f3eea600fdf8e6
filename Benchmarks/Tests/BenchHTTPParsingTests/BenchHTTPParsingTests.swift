import Foundation
import Testing

@testable import BenchHTTPParsing

/// The load generator's hand-written HTTP parser is only trustworthy if it frames responses exactly
/// as the servers send them (Hummingbird: Content-Length; Go's net/http: Content-Length or chunked),
/// however TCP happens to split them.
@Suite struct BenchResponseParserTests {
  static let simple = Array(
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 13\r\n\r\n{\"foo\":\"bar\"}".utf8)

  @Test func wholeResponseInOneRead() throws {
    var parser = BenchResponseParser()
    parser.append(Self.simple)
    let response = try #require(try parser.next())
    #expect(response.status == 200)
    #expect(response.body == Array("{\"foo\":\"bar\"}".utf8))
    #expect(!response.closes)
    #expect(try parser.next() == nil)
    #expect(parser.pendingBytes == 0)
  }

  @Test func responseSplitIntoSingleBytes() throws {
    var parser = BenchResponseParser()
    var responses: [BenchResponse] = []
    for byte in Self.simple {
      parser.append([byte])
      if let response = try parser.next() { responses.append(response) }
    }
    #expect(responses.count == 1)
    #expect(responses.first?.body.count == 13)
  }

  @Test func backToBackResponsesInOneRead() throws {
    var parser = BenchResponseParser()
    let redirect = Array(
      "HTTP/1.1 307 Temporary Redirect\r\nLOCATION: http://127.0.0.1:8092/key\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        .utf8)
    parser.append(Self.simple + redirect)
    #expect(try parser.next()?.status == 200)
    let second = try #require(try parser.next())
    #expect(second.status == 307)
    #expect(second.location == "http://127.0.0.1:8092/key")
    #expect(second.closes)
    #expect(second.body.isEmpty)
    #expect(try parser.next() == nil)
  }

  @Test func chunkedBodyWithExtensionsAndSplits() throws {
    let text =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n{\"a\"\r\nC\r\n:\"bcdefghi\"}\r\n0\r\n\r\n"
    let bytes = Array(text.utf8)
    for split in 1..<bytes.count {
      var parser = BenchResponseParser()
      parser.append(bytes[..<split])
      var response = try parser.next()
      if response == nil {
        parser.append(bytes[split...])
        response = try parser.next()
      }
      #expect(response?.body == Array("{\"a\":\"bcdefghi\"}".utf8), "split at \(split)")
    }
  }

  @Test func garbageIsAnError() {
    var parser = BenchResponseParser()
    parser.append(Array("SSH-2.0-OpenSSH\r\n\r\n".utf8))
    #expect(throws: BenchParseError.self) { try parser.next() }
  }
}

@Suite struct BenchEncodingTests {
  @Test(arguments: [0, 1, 2, 3, 16, 255, 256])
  func base64MatchesFoundation(count: Int) {
    let input = (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
    var encoded: [UInt8] = []
    base64Append(input, to: &encoded)
    #expect(String(decoding: encoded, as: UTF8.self) == Data(input).base64EncodedString())
    #expect(base64Decode(encoded) == input)
  }

  @Test func casAnswersOfBothServers() {
    let raftdbLost = Array(#"{"revision": 12, "succeeded": false, "value": "v2"}"#.utf8)
    #expect(!jsonFieldIsTrue("succeeded", in: raftdbLost))
    #expect(jsonStringField("value", in: raftdbLost) == Array("v2".utf8))
    #expect(jsonStringField("value", in: Array(#"{"succeeded":false,"value":null}"#.utf8)) == nil)
    let etcdWon = Array(
      #"{"header":{"revision":"9"},"succeeded":true,"responses":[{"response_put":{}}]}"#.utf8)
    #expect(jsonFieldIsTrue("succeeded", in: etcdWon))
    let etcdLost = Array(
      #"{"header":{},"responses":[{"response_range":{"kvs":[{"key":"azE=","value":"djI="}],"count":"1"}}]}"#
        .utf8)
    #expect(!jsonFieldIsTrue("succeeded", in: etcdLost))
    #expect(jsonStringField("value", in: etcdLost).flatMap { base64Decode($0) } == Array("v2".utf8))
  }
}
