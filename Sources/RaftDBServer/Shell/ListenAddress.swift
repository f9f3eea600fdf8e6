import Foundation
import NIOCore
import NIOPosix
import RaftDBAPI

/// An address this node must listen on, with the flag that set it, so that an error can name both.
public struct ListenAddress: Sendable {
  public var flag: String
  public var address: String

  public init(flag: String, address: String) {
    self.flag = flag
    self.address = address
  }
}

/// Why a listen address cannot be used, in one line: "-haddr 127.0.0.1:8091: address already in use".
public struct ListenAddressError: Error, CustomStringConvertible {
  public var address: ListenAddress
  public var reason: String

  public var description: String { "\(address.flag) \(address.address): \(reason)" }
}

extension ListenAddress {
  /// Binds and closes a listener on every address, in order, and throws for the first that cannot
  /// be bound. A node calls this before it touches its data directory: a first start would
  /// otherwise bootstrap a cluster there and then fail on the port, leaving state behind that makes
  /// the next start (with the port fixed) a restart instead of the first start the operator meant.
  /// The bind uses the same options as the real listeners (SO_REUSEADDR), so it fails exactly when
  /// they would; another program can still take the port between this check and the real bind,
  /// which then fails as before.
  public static func requireAvailable(_ addresses: [ListenAddress], group: any EventLoopGroup) async throws {
    for address in addresses {
      guard let (host, port) = splitHostPort(address.address) else {
        throw ListenAddressError(address: address, reason: "not host:port")
      }
      do {
        let channel = try await ServerBootstrap(group: group)
          .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
          .bind(host: host, port: port).get()
        try await channel.close()
      } catch {
        throw ListenAddressError(address: address, reason: Self.reason(error))
      }
    }
  }

  /// A bind failure as a person reads it, without NIO's type names.
  static func reason(_ error: any Error) -> String {
    guard let io = error as? IOError else {
      if error is SocketAddressError { return "cannot resolve the host" }
      return "\(error)"
    }
    switch io.errnoCode {
    case EADDRINUSE: return "address already in use"
    case EADDRNOTAVAIL: return "address not available on this machine"
    case EACCES: return "permission denied (ports below 1024 need privileges)"
    default: return String(cString: strerror(io.errnoCode)).lowercased()
    }
  }
}
