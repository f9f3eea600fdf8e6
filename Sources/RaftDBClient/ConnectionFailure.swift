import NIOCore
import NIOPosix

/// Why the client could not talk to an endpoint, as an operator reads it ("connection refused"),
/// instead of NIO's error dump, and whether waiting could help.
struct ConnectionFailure {
  var text: String
  /// Nothing answers there and nothing will soon: the connection was refused, or the host has no
  /// address. A timeout or a dropped connection is not permanent: the member may be busy, paused
  /// or restarting.
  var isPermanent: Bool

  init(_ error: any Error) {
    switch error {
    case let error as NIOConnectionError:
      let errnos = error.connectionErrors.map { ($0.error as? IOError)?.errnoCode }
      if !errnos.isEmpty && errnos.allSatisfy({ $0 == ECONNREFUSED }) {
        (text, isPermanent) = ("connection refused", true)
      } else if errnos.isEmpty && (error.dnsAError != nil || error.dnsAAAAError != nil) {
        (text, isPermanent) = ("cannot resolve host \(error.host)", true)
      } else {
        let first = error.connectionErrors.first.map { "\($0.error)" } ?? "\(error)"
        (text, isPermanent) = (first, false)
      }
    case let error as IOError where error.errnoCode == ECONNREFUSED:
      (text, isPermanent) = ("connection refused", true)
    case ChannelError.connectTimeout:
      (text, isPermanent) = ("connection timed out", false)
    case let error as RaftDBClientError:
      if case .unavailable(let why) = error {
        (text, isPermanent) = (why, true)
      } else {
        (text, isPermanent) = ("\(error)", false)
      }
    default:
      (text, isPermanent) = ("\(error)", false)
    }
  }
}

/// Why a connection failed, as an operator reads it ("connection refused") rather than NIO's dump.
public func describeConnectionError(_ error: any Error) -> String {
  ConnectionFailure(error).text
}
